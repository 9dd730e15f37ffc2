use super::*;
#[test]
fn probe() {
    for text in ["[server\nworkers = 1\n[log]\nlevel = \"info\nformat=\"json\"\n", "a = = 1\nb = \nc = 'x'\n[[route]\n", "x = [1,\ny = 2\n", "a = 1\na = 2\n[t]\n[t]\n"] {
        let (_, errs) = toml::de::DeTable::parse_recoverable(text);
        for e in &errs { println!("{}", ConfigError::from_toml(Path::new("t"), text, e)); }
        println!("-----");
    }
    panic!();
}
