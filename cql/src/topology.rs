//! What the cluster looks like (datacenters and their nodes, as the driver sees them) and
//! the replication `migrate` creates a keyspace with: chosen from that view
//! (`replication = "auto"`) or checked against it, so a keyspace is never created with
//! replicas the cluster cannot hold.

use std::collections::BTreeMap;
use std::fmt;

use scylla::client::session::Session;
use scylla::cluster::metadata::Strategy;

use crate::CqlError;

/// Replicas per datacenter `auto` chooses at most: a quorum survives one node down.
const AUTO_REPLICAS: usize = 3;

/// Nodes per datacenter, as the driver discovered them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    pub(crate) datacenters: BTreeMap<String, usize>,
}

impl Topology {
    /// The datacenters of the nodes `session` knows (a node without one counts under
    /// `datacenter1`, Cassandra's default name).
    pub(crate) fn of(session: &Session) -> Topology {
        let state = session.get_cluster_state();
        let mut datacenters = BTreeMap::new();
        for node in state.get_nodes_info() {
            let dc = node
                .datacenter
                .clone()
                .unwrap_or_else(|| "datacenter1".into());
            *datacenters.entry(dc).or_insert(0) += 1;
        }
        Topology { datacenters }
    }

    fn nodes(&self) -> usize {
        self.datacenters.values().sum()
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .datacenters
            .iter()
            .map(|(dc, n)| format!("{dc}: {n} node{}", if *n == 1 { "" } else { "s" }))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// A keyspace's replication, as far as shortlink checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replication {
    /// `SimpleStrategy` with this many replicas.
    Simple(usize),
    /// `NetworkTopologyStrategy`: replicas per datacenter.
    Network(BTreeMap<String, usize>),
}

impl Replication {
    /// Parses a CQL replication map such as
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`.
    pub(crate) fn parse(text: &str) -> Result<Replication, String> {
        let inner = text
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("'{text}' is not a CQL map such as {}", example()))?;
        let mut class = None;
        let mut factors = BTreeMap::new();
        for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once(':')
                .ok_or_else(|| format!("'{}' in '{text}' is not 'key': value", pair.trim()))?;
            let key = unquote(key);
            let value = unquote(value);
            if key == "class" {
                class = Some(value.rsplit('.').next().unwrap_or(value).to_owned());
            } else {
                let n: usize = value.parse().map_err(|_| {
                    format!("the replica count '{value}' of '{key}' in '{text}' is not a number")
                })?;
                factors.insert(key.to_owned(), n);
            }
        }
        match class.as_deref() {
            Some("SimpleStrategy") => match factors.get("replication_factor") {
                Some(&n) if factors.len() == 1 && n > 0 => Ok(Replication::Simple(n)),
                _ => Err(format!(
                    "'{text}': SimpleStrategy takes one positive 'replication_factor'"
                )),
            },
            Some("NetworkTopologyStrategy") if !factors.is_empty() => {
                Ok(Replication::Network(factors))
            }
            Some("NetworkTopologyStrategy") => Err(format!(
                "'{text}': NetworkTopologyStrategy needs a replica count per datacenter"
            )),
            _ => Err(format!(
                "'{text}' must name class SimpleStrategy or NetworkTopologyStrategy, such as {}",
                example()
            )),
        }
    }

    /// What `auto` chooses: every datacenter seen, with up to three replicas each.
    pub(crate) fn auto(topology: &Topology) -> Replication {
        Replication::Network(
            topology
                .datacenters
                .iter()
                .map(|(dc, &n)| (dc.clone(), n.min(AUTO_REPLICAS)))
                .collect(),
        )
    }

    /// The replication of an existing keyspace, when shortlink knows its strategy.
    pub(crate) fn of_strategy(strategy: &Strategy) -> Option<Replication> {
        match strategy {
            Strategy::SimpleStrategy { replication_factor } => {
                Some(Replication::Simple(*replication_factor))
            }
            Strategy::NetworkTopologyStrategy {
                datacenter_repfactors,
            } => Some(Replication::Network(
                datacenter_repfactors
                    .iter()
                    .map(|(dc, n)| (dc.clone(), *n))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// Refuses replication the cluster cannot hold: an unknown datacenter, or more replicas
    /// than nodes (every write at a quorum would then fail).
    pub(crate) fn check(&self, topology: &Topology) -> Result<(), String> {
        match self {
            Replication::Simple(n) if *n > topology.nodes() => Err(format!(
                "replication {self} asks for {n} replicas, but the cluster has {} node(s) ({topology})",
                topology.nodes()
            )),
            Replication::Simple(_) => Ok(()),
            Replication::Network(factors) => {
                for (dc, &n) in factors {
                    match topology.datacenters.get(dc) {
                        None => {
                            return Err(format!(
                                "replication {self} names datacenter '{dc}', which this cluster \
                                 does not have ({topology})"
                            ));
                        }
                        Some(&nodes) if n > nodes => {
                            return Err(format!(
                                "replication {self} asks for {n} replicas in '{dc}', which has \
                                 {nodes} node(s)"
                            ));
                        }
                        Some(_) => {}
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Replication {
    /// The CQL map, as `CREATE KEYSPACE ... WITH replication =` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replication::Simple(n) => write!(
                f,
                "{{'class': 'SimpleStrategy', 'replication_factor': {n}}}"
            ),
            Replication::Network(factors) => {
                f.write_str("{'class': 'NetworkTopologyStrategy'")?;
                for (dc, n) in factors {
                    write!(f, ", '{dc}': {n}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn example() -> &'static str {
    "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
}

fn unquote(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text)
}

/// The replication `migrate` creates `config`'s keyspace with, and why.
pub(crate) fn for_new_keyspace(
    configured: &str,
    topology: &Topology,
) -> Result<(Replication, String), CqlError> {
    if configured.trim().eq_ignore_ascii_case("auto") {
        let chosen = Replication::auto(topology);
        return Ok((
            chosen,
            format!("chosen from the nodes seen ({topology}); set store.cql.replication to choose"),
        ));
    }
    let replication = Replication::parse(configured)
        .map_err(|e| CqlError::Schema(format!("store.cql.replication: {e}")))?;
    replication
        .check(topology)
        .map_err(|e| CqlError::Schema(format!("store.cql.replication: {e}")))?;
    Ok((replication, "from store.cql.replication".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(dcs: &[(&str, usize)]) -> Topology {
        Topology {
            datacenters: dcs.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn parses_both_strategies_and_prints_them_back() {
        let text = "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}";
        let parsed = Replication::parse(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        let simple = "{'class' : 'org.apache.cassandra.locator.SimpleStrategy', \
                      'replication_factor': '1'}";
        assert_eq!(Replication::parse(simple).unwrap(), Replication::Simple(1));
        for bad in [
            "",
            "auto",
            "{'class': 'SimpleStrategy'}",
            "{'class': 'SimpleStrategy', 'replication_factor': 0}",
            "{'class': 'NetworkTopologyStrategy'}",
            "{'class': 'NetworkTopologyStrategy', 'dc1': three}",
            "{'class': 'EverywhereStrategy'}",
            "{'dc1': 3}",
        ] {
            assert!(Replication::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_takes_every_datacenter_with_at_most_three_replicas() {
        let one = topology(&[("datacenter1", 1)]);
        assert_eq!(
            Replication::auto(&one).to_string(),
            "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
        );
        let two = topology(&[("dc1", 5), ("dc2", 2)]);
        assert_eq!(
            Replication::auto(&two).to_string(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
    }

    #[test]
    fn replication_the_cluster_cannot_hold_is_refused() {
        let single = topology(&[("datacenter1", 1)]);
        let cluster = Replication::parse(example()).unwrap();
        let why = cluster.check(&single).unwrap_err();
        assert!(
            why.contains("'dc1'") && why.contains("datacenter1: 1 node"),
            "{why}"
        );
        let three = topology(&[("dc1", 3)]);
        cluster.check(&three).unwrap();
        let four = Replication::parse("{'class': 'NetworkTopologyStrategy', 'dc1': 4}").unwrap();
        assert!(four.check(&three).unwrap_err().contains("has 3 node(s)"));
        assert!(Replication::Simple(2).check(&single).is_err());
        Replication::Simple(3).check(&three).unwrap();
        let (chosen, why) = for_new_keyspace("auto", &single).unwrap();
        assert_eq!(chosen, Replication::auto(&single));
        assert!(why.contains("datacenter1: 1 node"), "{why}");
        assert!(for_new_keyspace(example(), &single).is_err());
    }
}
