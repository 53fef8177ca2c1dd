//! `fast-origin`: answers every GET with a fixed JSON body. See `accel_benches::fast_origin`.

use std::{net::SocketAddr, num::NonZeroUsize, process::ExitCode};

use accel_benches::{fast_origin, runtime};
use clap::Parser;
use tokio::net::TcpListener;

/// Command line of `fast-origin`.
#[derive(Debug, Parser)]
#[command(name = "fast-origin", version, about = "Minimal HTTP/1.1 origin with a fixed JSON answer")]
struct Args {
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:18001")]
    listen: SocketAddr,
    /// Body size in bytes.
    #[arg(long, default_value_t = fast_origin::DEFAULT_SIZE)]
    size: usize,
    /// Leave out `Cache-Control: max-age=300`.
    #[arg(long)]
    no_cache_control: bool,
    /// Tokio worker threads.
    #[arg(long, default_value = "1")]
    threads: NonZeroUsize,
}

fn main() -> ExitCode {
    let Args { listen, size, no_cache_control, threads } = Args::parse();
    let runtime = match runtime::build(threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fast-origin: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("fast-origin: cannot listen on {listen}: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            // Scripts read this line to learn the port.
            println!("listening on {addr}");
        }
        let answer = fast_origin::Answer::new(size, !no_cache_control);
        tokio::select! {
            () = fast_origin::serve(listener, answer) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}
