//! Counts in messages: `1 message`, `2 messages`, never `1 messages`.

/// `n` and the noun that goes with it: `one` for exactly one, else `many`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_and_many() {
        assert_eq!(count(1u64, "message", "messages"), "1 message");
        assert_eq!(count(0u64, "message", "messages"), "0 messages");
        assert_eq!(count(3u32, "process", "processes"), "3 processes");
    }
}
