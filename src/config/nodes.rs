//! Lists of server addresses in settings (`REDIS_SENTINELS=host:port,host:port`): [`Nodes`] and
//! its [`NodeAddr`]s. Every entry needs an explicit port; IPv6 addresses are written in brackets
//! (`[::1]:26379`). A bad entry is kept as text until build time, where the setting's error names
//! it.

use std::fmt;

/// One server address of a [`Nodes`] list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port (1-65535).
    pub port: u16,
}

impl NodeAddr {
    /// Parses `host:port` (`[v6]:port` for an IPv6 address).
    ///
    /// # Errors
    /// The reason, naming the entry, when it is not `host:port` with a port from 1 to 65535.
    pub fn parse(entry: &str) -> Result<NodeAddr, String> {
        let entry = entry.trim();
        let bad = |why: &str| Err(format!("{entry:?} is not host:port ({why})"));
        let (host, port) = match entry.strip_prefix('[') {
            Some(rest) => match rest.split_once("]:") {
                Some((h, p)) => (h, p),
                None => return bad("an IPv6 address needs brackets and a port: [::1]:26379"),
            },
            None => match entry.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return bad("write an IPv6 address in brackets: [::1]:26379");
                }
                Some((h, p)) => (h, p),
                None => return bad("the port is missing"),
            },
        };
        if host.is_empty() {
            return bad("the host is empty");
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(NodeAddr {
                host: host.to_string(),
                port,
            }),
            _ => bad("the port must be 1-65535"),
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A list of server addresses (sentinels, cluster seed nodes), in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    addrs: Vec<NodeAddr>,
    /// Why an entry given could not be parsed (reported at build time).
    invalid: Option<String>,
}

impl Nodes {
    /// No addresses.
    pub const EMPTY: Nodes = Nodes {
        addrs: Vec::new(),
        invalid: None,
    };

    /// Parses each `host:port` entry (empty entries between commas are skipped).
    pub fn parse<I, S>(entries: I) -> Nodes
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nodes = Nodes::EMPTY;
        for e in entries {
            let e = e.as_ref();
            if e.trim().is_empty() {
                continue;
            }
            match NodeAddr::parse(e) {
                Ok(a) if !nodes.addrs.contains(&a) => nodes.addrs.push(a),
                Ok(_) => {}
                Err(why) => {
                    nodes.invalid.get_or_insert(why);
                }
            }
        }
        nodes
    }

    /// The addresses, in the order given.
    pub fn iter(&self) -> std::slice::Iter<'_, NodeAddr> {
        self.addrs.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.invalid.is_none()
    }

    /// The first bad entry's problem, if any (checked at build time).
    pub(super) fn invalid(&self) -> Option<&str> {
        self.invalid.as_deref()
    }
}

impl<'a> IntoIterator for &'a Nodes {
    type Item = &'a NodeAddr;
    type IntoIter = std::slice::Iter<'a, NodeAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_why_not() {
        let n = Nodes::parse("a:26379, 10.0.0.2:26380,,[::1]:1,a:26379".split(','));
        assert_eq!(n.to_string(), "a:26379,10.0.0.2:26380,[::1]:1");
        assert_eq!(n.invalid(), None);
        for (bad, why) in [
            ("a", "port is missing"),
            ("a:0", "1-65535"),
            ("a:99999", "1-65535"),
            (":1", "host is empty"),
            ("::1:5", "brackets"),
            ("[::1]", "brackets"),
        ] {
            let n = Nodes::parse([bad]);
            let got = n.invalid().unwrap_or_default().to_string();
            assert!(got.contains(why) && got.contains(bad), "{bad}: {got}");
            assert!(!n.is_empty(), "an invalid list is not an empty one");
        }
    }
}
