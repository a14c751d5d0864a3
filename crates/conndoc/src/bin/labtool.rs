//! `conndoc-labtool`: programs the fault lab runs inside its namespaces (see conndoc_lab::tool).
fn main() {
    std::process::exit(conndoc_lab::tool::main_with(std::env::args().skip(1).collect()));
}
