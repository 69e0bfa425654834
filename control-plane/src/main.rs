//! `control-plane`: `local` (default) runs the whole system on this machine; `serve` runs the
//! control plane alone; `token` mints an access token offline.

use anyhow::Context;
use clap::Parser;
use control_plane::cli::{Cli, Cmd, TokenArgs};
use control_plane::launch::{self, ChildOptions};
use control_plane::{shutdown, supervise};
use control_plane::token::{Grants, TokenKeys};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    match Cli::parse().into_command() {
        Cmd::Token(TokenArgs { room, identity, ttl_seconds, no_publish, no_subscribe, no_auto_subscribe, server }) => {
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
            let app = prepared.app.clone();
            let result = tokio::select! {
                r = prepared.serve() => r,
                stop = limits::stop::requested() => {
                    tracing::info!(%stop, "stopping");
                    Ok(())
                }
            };
            app.shutdown.stop(shutdown::DRAIN).await;
            result
        }
        Cmd::Local(args) => {
            let (cfg, local) = args.resolve()?;
            let prepared = launch::prepare(&cfg)?;
            let opts = ChildOptions { bin: local.media_plane_bin, port_base: local.media_port_base, cores: local.media_cores, force_epoll: local.force_epoll };
            let mut child = launch::spawn_media_plane(&cfg, &prepared, &opts).context("starting the media plane")?;
            let relay = launch::spawn_relay(&cfg, local.relay_bin.as_ref(), &opts).context("starting the relay")?;
            banner(&cfg, prepared.addr.port(), true);
            if let Some(t) = &cfg.turn {
                println!("  TURN relay:  turn:{}:{} (udp, tcp), turns:{}:{}; REST secret in {}\n", t.host, t.port, t.host, t.tls_port, cfg.data_dir.join("secrets.toml").display());
            }
            let app = prepared.app.clone();
            let result = tokio::select! {
                r = prepared.serve() => r,
                status = child.wait() => Err(anyhow::anyhow!("the media plane exited ({status:?}); see its error above")),
                stop = limits::stop::requested() => {
                    println!("stopping ({stop})");
                    Ok(())
                }
            };
            let open = app.shutdown.stop(shutdown::DRAIN).await;
            if open > 0 {
                tracing::warn!(open, "signaling connections still open");
            }
            let media = supervise::stop(&mut child, supervise::GRACE);
            let relay = async {
                match relay {
                    Some(mut r) => Some(supervise::stop(&mut r, supervise::GRACE).await),
                    None => None,
                }
            };
            let (media, relay) = tokio::join!(media, relay);
            println!("media plane {media}");
            if let Some(relay) = relay {
                println!("relay {relay}");
            }
            result
        }
    }
}
