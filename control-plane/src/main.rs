//! `control-plane`: `local` (default) runs the whole system on this machine; `serve` runs the
//! control plane alone; `token` mints an access token offline.

use anyhow::Context;
use clap::{Parser, Subcommand};
use control_plane::config::ServerArgs;
use control_plane::launch::{self, ChildOptions};
use control_plane::token::{Grants, TokenKeys};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebRTC conferencing control plane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the control plane and a media-plane node on this machine (the default).
    Local {
        #[command(flatten)]
        server: ServerArgs,
        /// media-plane binary [default: next to this executable, built by cargo if missing].
        #[arg(long, env = "MEDIA_PLANE_BIN")]
        media_plane_bin: Option<std::path::PathBuf>,
        /// UDP port of media core 0; core i uses base + i (0: free ports).
        #[arg(long, env = "MEDIA_PORT_BASE", default_value_t = 50000)]
        media_port_base: u16,
        /// Media cores to use [default: all].
        #[arg(long, env = "MEDIA_CORES")]
        media_cores: Option<usize>,
        /// Run the media plane and relay on epoll instead of io_uring.
        #[arg(long, env = "FORCE_EPOLL")]
        force_epoll: bool,
        /// relay binary [default: next to this executable, built by cargo if missing].
        #[arg(long, env = "RELAY_BIN")]
        relay_bin: Option<std::path::PathBuf>,
        /// Do not start the TURN relay.
        #[arg(long, env = "NO_RELAY")]
        no_relay: bool,
    },
    /// Run the control plane only; media-plane nodes connect to it.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Mint an access token offline with the API key and secret.
    Token {
        /// Room.
        #[arg(long)]
        room: String,
        /// Participant identity.
        #[arg(long)]
        identity: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 6 * 3600)]
        ttl_seconds: u64,
        /// Deny publishing.
        #[arg(long)]
        no_publish: bool,
        /// Deny subscribing.
        #[arg(long)]
        no_subscribe: bool,
        /// Receive only the tracks the client subscribes to (auto-subscribe off).
        #[arg(long)]
        no_auto_subscribe: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}

fn banner(cfg: &control_plane::config::Config, port: u16, local: bool) {
    let host = cfg.public_ip.first().copied().or_else(launch::primary_ipv4).map(|i| i.to_string());
    // The open join asks for the invite secret, which the printed links carry (as Jupyter's do).
    let invite = cfg.invite.as_ref().map(|s| format!("?invite={s}")).unwrap_or_default();
    println!();
    println!("  Open:        https://localhost:{port}/{invite}");
    if let Some(h) = host {
        println!("  On the LAN:  https://{h}:{port}/{invite}");
    }
    println!("  API key:     {}", cfg.api_key);
    if cfg.generated_secrets {
        println!("  API secret:  {}   (generated once; stored in {})", cfg.api_secret, cfg.data_dir.join("secrets.toml").display());
    } else {
        println!("  API secret:  stored in {}", cfg.data_dir.join("secrets.toml").display());
    }
    if !local {
        println!("  Node secret: stored in {} (media-plane --node-secret)", cfg.data_dir.join("secrets.toml").display());
    }
    println!("  Stop:        press Ctrl-C");
    println!();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Local {
        server: ServerArgs::default(),
        media_plane_bin: None,
        media_port_base: 50000,
        media_cores: None,
        force_epoll: false,
        relay_bin: None,
        no_relay: false,
    }) {
        Cmd::Token { room, identity, ttl_seconds, no_publish, no_subscribe, no_auto_subscribe, server } => {
            let cfg = server.resolve(false)?;
            let keys = TokenKeys::new(&cfg.api_key, &cfg.api_secret);
            let grants = Grants { can_publish: !no_publish, can_subscribe: !no_subscribe, auto_subscribe: !no_auto_subscribe };
            println!("{}", keys.mint(&room, &identity, grants, ttl_seconds).map_err(|e| anyhow::anyhow!("{e}"))?);
            Ok(())
        }
        Cmd::Serve { server } => {
            let cfg = server.resolve(false)?;
            let prepared = launch::prepare(&cfg)?;
            banner(&cfg, prepared.addr.port(), false);
            tokio::select! {
                r = prepared.serve() => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Cmd::Local { server, media_plane_bin, media_port_base, media_cores, force_epoll, relay_bin, no_relay } => {
            let mut cfg = server.resolve(true)?;
            if no_relay {
                cfg.turn = None;
            }
            let prepared = launch::prepare(&cfg)?;
            let opts = ChildOptions { bin: media_plane_bin, port_base: media_port_base, cores: media_cores, force_epoll };
            let mut child = launch::spawn_media_plane(&cfg, &prepared, &opts).context("starting the media plane")?;
            let relay = launch::spawn_relay(&cfg, relay_bin.as_ref(), &opts).context("starting the relay")?;
            banner(&cfg, prepared.addr.port(), true);
            if let Some(t) = &cfg.turn {
                println!("  TURN relay:  turn:{}:{} (udp, tcp), turns:{}:{}; REST secret in {}\n", t.host, t.port, t.host, t.tls_port, cfg.data_dir.join("secrets.toml").display());
            }
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let result = tokio::select! {
                r = prepared.serve() => r,
                status = child.wait() => Err(anyhow::anyhow!("the media plane exited ({status:?}); see its error above")),
                _ = tokio::signal::ctrl_c() => { println!("stopping"); Ok(()) }
                _ = term.recv() => Ok(()),
            };
            let _ = child.kill().await;
            if let Some(mut r) = relay {
                let _ = r.kill().await;
            }
            result
        }
    }
}
