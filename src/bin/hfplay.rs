//! `hfplay`: Heirflow's playbook runner. Everything lives in the library; see `hfplay::cli`.

fn main() {
    std::process::exit(hfplay::cli::main_exit());
}
