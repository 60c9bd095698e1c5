//! The tokio peer of ringvisor's `echo` example: a current-thread runtime,
//! one task per connection, read then write back what was read.

use clap::Parser;
use ringvisor_peers::{listening_line, ServerArgs, READ_CAPACITY_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    println!("{}", listening_line(listener.local_addr()?, "tokio"));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

async fn connection(mut stream: TcpStream) {
    let mut buf = vec![0u8; READ_CAPACITY_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
