//! The tokio peer of `http_kv`: a current-thread runtime, one task per
//! connection, the shared HTTP KV subset over an in-memory map.

use std::cell::RefCell;
use std::rc::Rc;

use clap::Parser;
use ringvisor_peers::date::DateCache;
use ringvisor_peers::http::{serve_buffered, Flow, Store};
use ringvisor_peers::{listening_line, ServerArgs, READ_CAPACITY_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(args))
}

async fn serve(args: ServerArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    println!("{}", listening_line(listener.local_addr()?, "tokio"));
    let store = Rc::new(RefCell::new((Store::new(), DateCache::default())));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(connection(stream, store.clone()));
    }
}

async fn connection(mut stream: TcpStream, store: Rc<RefCell<(Store, DateCache)>>) {
    let mut input = Vec::with_capacity(READ_CAPACITY_BYTES);
    let mut out = Vec::with_capacity(READ_CAPACITY_BYTES);
    loop {
        if input.capacity() - input.len() < READ_CAPACITY_BYTES / 2 {
            input.reserve(READ_CAPACITY_BYTES);
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        out.clear();
        let flow = {
            let (map, date) = &mut *store.borrow_mut();
            serve_buffered(&mut input, map, date.get(), &mut out)
        };
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if flow == Flow::Close {
            return;
        }
    }
}
