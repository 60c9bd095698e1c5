# The load client of benches/instructions/run.sh: a fixed number of
# pipelined HTTP KV requests, every response read before the next batch.
import random
import socket
import sys
# load.py PORT CONNS BATCHES DEPTH MIX(get|put) : fixed number of pipelined requests, responses read fully
port, conns, batches, depth, mix = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
random.seed(1)
val = b"v"*64
def req(n):
    key = random.randrange(1000)
    put = (n % 10) < (9 if mix == "put" else 1)
    if put:
        return b"PUT /kv/key%d HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n" % key + val
    return b"GET /kv/key%d HTTP/1.1\r\nHost: x\r\n\r\n" % key
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
n = 0
for b in range(batches):
    for s in socks:
        data = b"".join(req(n + i) for i in range(depth)); n += depth
        s.sendall(data)
    for s in socks:
        got = 0; buf = b""
        while got < depth:
            chunk = s.recv(65536)
            if not chunk: raise SystemExit("closed")
            buf += chunk
            # count complete responses
            while True:
                i = buf.find(b"\r\n\r\n")
                if i < 0: break
                head = buf[:i].lower()
                cl = 0
                j = head.find(b"content-length: ")
                if j >= 0: cl = int(head[j+16:].split(b"\r\n")[0])
                if len(buf) < i + 4 + cl: break
                buf = buf[i+4+cl:]; got += 1
print(n)
