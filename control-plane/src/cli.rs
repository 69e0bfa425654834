//! The command line of the `control-plane` binary: `local` (also what runs with no
//! subcommand, flags and environment included), `serve` and `token`.

use clap::{Parser, Subcommand};

use crate::config::{LocalArgs, ServerArgs};

/// WebRTC conferencing control plane.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run [default: local, with the flags given here].
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// `local`'s flags, for a run without a subcommand (`cargo run --release -- --http-addr …`).
    #[command(flatten)]
    pub local: LocalArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the control plane and a media-plane node on this machine (the default).
    Local(LocalArgs),
    /// Run the control plane only; media-plane nodes connect to it.
    Serve {
        /// Server options.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Mint an access token offline with the API key and secret.
    Token(TokenArgs),
}

/// `token`'s options.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Room.
    #[arg(long)]
    pub room: String,
    /// Participant identity.
    #[arg(long)]
    pub identity: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    pub ttl_seconds: u64,
    /// Deny publishing.
    #[arg(long)]
    pub no_publish: bool,
    /// Deny subscribing.
    #[arg(long)]
    pub no_subscribe: bool,
    /// Receive only the tracks the client subscribes to (auto-subscribe off).
    #[arg(long)]
    pub no_auto_subscribe: bool,
    /// Server options (the API key and secret sign the token).
    #[command(flatten)]
    pub server: ServerArgs,
}

impl Cli {
    /// The command to run: the subcommand, or `local` with the top-level flags.
    pub fn into_command(self) -> Cmd {
        self.command.unwrap_or(Cmd::Local(self.local))
    }
}
