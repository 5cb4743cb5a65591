//! `heir-supervisor db`: automatic PostgreSQL failover with a floating IP.
//!
//! Placeholder: owned by the DB-failover work (this module and `src/vip/`). The CLI already
//! dispatches here; replace [`DbArgs`] and [`run`] freely.

use anyhow::{bail, Result};

/// Arguments of `heir-supervisor db` (to be defined by the DB-failover work).
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Everything after `db`, uninterpreted for now.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub async fn run(_args: DbArgs) -> Result<i32> {
    bail!("`heir-supervisor db` is not yet implemented")
}
