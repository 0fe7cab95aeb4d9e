//! Globs on app ids and endpoint hosts: `*` matches any run of characters
//! (even none), `?` exactly one; anchored, case-sensitive, every other
//! character literal (dots included). A leaf: it imports nothing of ours.

/// Whether a config key is a glob rather than an exact app id.
pub fn is_glob(key: &str) -> bool {
    key.contains(['*', '?'])
}

/// Anchored glob match over characters: `*` matches any run (even empty), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much text it had swallowed, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("com.example.*", "com.example.ios"));
        assert!(glob_match("com.example.*", "com.example."));
        assert!(!glob_match("com.example.*", "com.exampleXios"));
        assert!(glob_match("com.?xample.ios", "com.example.ios"));
        assert!(!glob_match("com.?xample.ios", "com.xample.ios"));
        assert!(!glob_match("com.example.ios", "com.example.ios.dev"));
        assert!(!glob_match("Com.example.*", "com.example.ios"));
        assert!(glob_match("*.ios*", "com.example.ios.dev"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("??", "é1"));
    }
}
