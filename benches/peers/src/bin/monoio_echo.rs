//! The monoio peer of ringvisor's `echo` example: monoio's io_uring driver on
//! one thread, one task per connection, read then write back what was read.

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
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
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        monoio::spawn(connection(stream));
    }
}

async fn connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(READ_CAPACITY_BYTES);
    loop {
        let (res, read) = stream.read(buf).await;
        buf = read;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, written) = stream.write_all(buf).await;
        buf = written;
        if res.is_err() {
            return;
        }
        buf.clear();
    }
}
