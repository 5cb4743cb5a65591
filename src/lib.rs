//! hfplay: Heirflow's playbook runner. Data flows one way: files → typed plan (`playbook`,
//! `inventory`) → per-host task stream (`runner`) → module (`modules`) → connection
//! (`connection`) → results → report (`report`).

pub mod connection;
pub mod modules;
pub mod error;
pub mod yaml;
pub mod inventory;
pub mod vars;
pub mod filters;
pub mod template;
pub mod playbook;
pub mod report;
pub mod runner;
pub mod cli;
