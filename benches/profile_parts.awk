# Sums `perf report --no-children --sort dso,sym --stdio` lines into parts of a
# server's work (benches/run.sh, the profile section). A sample counts where it
# landed after inlining: parsing inlined into a connection's step counts as the
# server's own code.
/^ +[0-9.]+%/ {
  pct = $1 + 0; dso = $2; sym = ""
  for (i = 4; i <= NF; i++) sym = sym (i > 4 ? " " : "") $i
  if ($3 == "[k]") {
    if (sym ~ /^(__)?io_|io_uring/) part = "kernel: io_uring"
    else if (sym ~ /tcp|^(__)?ip_|inet|skb|sock|^(__)?net|^(__)?dev_|bbr|_copy_(to|from)_iter|^sk_|napi|loopback|csum|neigh|fib_|nf_|raw_v4|lock_sock|release_sock|__kfree_skb|kmalloc_reserve|page_frag/) part = "kernel: TCP/IP and loopback"
    else part = "kernel: other (interrupt re-enabling, scheduling, allocation, syscall entry)"
  } else if (sym ~ /httparse|http_kv::http::|http_kv::input::|memchr|from_utf8|http_kv::router::route|http_kv::percent|ringvisor_peers::http::parse/) part = "user: HTTP parsing"
  else if (sym ~ /ringvisor_runtime|io_uring::/) part = "user: the loop (ringvisor_runtime)"
  else if (sym ~ /ringvisor_behaviours/) part = "user: behaviours (gen_server calls, shards)"
  else if (dso ~ /^libc/) part = "user: libc (memcpy, malloc)"
  else part = "user: the server's own code (connections, routing, responses, map)"
  share[part] += pct
}
END { for (p in share) printf "  %6.2f%%  %s\n", share[p], p }
