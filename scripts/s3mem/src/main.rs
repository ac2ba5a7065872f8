//! `s3mem`: an S3 server that keeps everything in memory, for s3-ferry's benchmark. Its rows
//! measure the clients, not the server: a listing page costs its own length (a key-sorted
//! `BTreeMap`), a ranged GET reads only its range, a multipart object is its parts, joined
//! without a copy. Requests are signed (SigV4) with one access key; path-style addressing.
//!
//! ```text
//! s3mem --port 9000 --access-key bench --secret-key bench
//! ```

mod listing;
mod multipart;
mod s3;
mod store;
mod wire;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "An in-memory, key-sorted S3 server (for the benchmark)"
)]
struct Opt {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0: any free one, printed on start).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The access key requests are signed with.
    #[arg(long)]
    access_key: String,
    /// Its secret key.
    #[arg(long)]
    secret_key: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opt = Opt::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(opt))
}

async fn serve(opt: Opt) -> Result<(), Box<dyn std::error::Error>> {
    let service = {
        let mut b = S3ServiceBuilder::new(s3::Mem::default());
        b.set_auth(SimpleAuth::from_single(opt.access_key, opt.secret_key));
        b.build()
    };
    let listener = TcpListener::bind((opt.host.as_str(), opt.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", opt.host, opt.port))?;
    println!("s3mem listening on http://{}", listener.local_addr()?);
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop_signal());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("s3mem: accepting a connection: {e}");
                    continue;
                }
            },
            () = stop.as_mut() => break,
        };
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
    }
    Ok(())
}

/// Ctrl-C or SIGTERM (how the benchmark stops it).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
