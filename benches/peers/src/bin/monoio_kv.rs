//! The monoio peer of `http_kv`: monoio's io_uring driver on one thread, one
//! task per connection, the shared HTTP KV subset over an in-memory map.

use std::cell::RefCell;
use std::rc::Rc;

use clap::Parser;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use ringvisor_peers::date::DateCache;
use ringvisor_peers::http::{serve_buffered, Flow, Store};
use ringvisor_peers::{listening_line, ServerArgs, READ_CAPACITY_BYTES};

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse();
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr)?;
    println!("{}", listening_line(listener.local_addr()?, "monoio"));
    let store = Rc::new(RefCell::new((Store::new(), DateCache::default())));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        monoio::spawn(connection(stream, store.clone()));
    }
}

async fn connection(mut stream: TcpStream, store: Rc<RefCell<(Store, DateCache)>>) {
    let mut input = Vec::with_capacity(READ_CAPACITY_BYTES);
    let mut out = Vec::with_capacity(READ_CAPACITY_BYTES);
    loop {
        if input.capacity() - input.len() < READ_CAPACITY_BYTES / 2 {
            input.reserve(READ_CAPACITY_BYTES);
        }
        // Read into the spare capacity, after what is already buffered.
        let filled = input.len();
        let (res, slice) = stream.read(input.slice_mut(filled..)).await;
        input = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        out.clear();
        let flow = {
            let (map, date) = &mut *store.borrow_mut();
            serve_buffered(&mut input, map, date.get(), &mut out)
        };
        if !out.is_empty() {
            let (res, buf) = stream.write_all(out).await;
            out = buf;
            if res.is_err() {
                return;
            }
        }
        if flow == Flow::Close {
            return;
        }
    }
}
