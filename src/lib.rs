//! hfplay: Heirflow's playbook runner. Data flows one way: files → typed plan (`playbook`,
//! `inventory`) → per-host task stream (`runner`) → module (`modules`) → connection
//! (`connection`) → results (`task_result`) → report (`report`).

pub mod ansible;
pub mod cli;
pub mod config;
pub mod connection;
pub mod error;
pub mod filters;
pub mod inventory;
pub mod jobs;
pub mod lookups;
pub mod modules;
pub mod playbook;
pub mod report;
pub mod runner;
pub mod task_result;
pub mod template;
pub mod vars;
pub mod words;
pub mod yaml;
