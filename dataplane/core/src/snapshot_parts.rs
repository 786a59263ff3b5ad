//! Snapshots assembled from Maglev tables that were populated elsewhere.
//!
//! The control plane populates the tables off the dataplane's host process and ships
//! them next to the config they belong to. [`Snapshot::from_parts`] checks that each
//! table fits its service (size, backend ids and order, no slot for a backend of weight
//! 0) before it uses one, so a table from another process can never index past a
//! service's backends on the packet path.

use std::sync::Arc;

use thiserror::Error;

use crate::config::Config;
use crate::maglev::MaglevTable;
use crate::snapshot::{backend_id, Snapshot, SnapshotError};

/// A table that does not fit the service it was given for.
#[derive(Debug, Error)]
pub enum PartsError {
    #[error("{tables} maglev tables given for {services} services: give one per service")]
    TableCount { tables: usize, services: usize },
    #[error(
        "service {service:?} has no backend of positive weight but was given a table: \
         send no table for it"
    )]
    UnexpectedTable { service: String },
    #[error("service {service:?} has backends of positive weight but no table: send one")]
    MissingTable { service: String },
    #[error(
        "the table of service {service:?} has {actual} slots, but the service's \
         table_size is {expected}: build the table with the service's table_size"
    )]
    TableSize {
        service: String,
        expected: u32,
        actual: u32,
    },
    #[error(
        "the table of service {service:?} was built for other backends than the service \
         lists (backend ids must match in order): rebuild it from the service's backends"
    )]
    BackendMismatch { service: String },
    #[error(
        "the table of service {service:?} gives {slots} slots to backend {backend:?} of \
         weight 0: rebuild it from the service's weights"
    )]
    ZeroWeightSlots {
        service: String,
        backend: String,
        slots: u32,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl Snapshot {
    /// Builds a snapshot from `config` like [`Snapshot::build`], but takes service `i`'s
    /// Maglev table from `tables[i]` instead of populating it. A service whose backends
    /// all have weight 0 (or that has none) takes `None`. Services given the same `Arc`
    /// share that table.
    ///
    /// # Errors
    ///
    /// [`PartsError`] when a table does not fit its service, or when the config cannot
    /// be built (a backend without an underlay address of its family).
    pub fn from_parts(
        config: &Config,
        generation: u32,
        tables: Vec<Option<Arc<MaglevTable>>>,
    ) -> Result<Snapshot, PartsError> {
        if tables.len() != config.services.len() {
            return Err(PartsError::TableCount {
                tables: tables.len(),
                services: config.services.len(),
            });
        }
        for (service, table) in config.services.iter().zip(&tables) {
            check_table(service, table.as_deref())?;
        }

        // With every weight at 0, `build` populates no table, so the cost of building
        // the rest (lookup maps and encapsulation templates) is all that is paid here.
        let mut unweighted = config.clone();
        for service in &mut unweighted.services {
            for backend in &mut service.backends {
                backend.weight = 0;
            }
        }
        let mut snapshot = Snapshot::build(&unweighted, generation)?;
        for ((service, configured), table) in snapshot
            .services
            .iter_mut()
            .zip(&config.services)
            .zip(tables)
        {
            for (backend, configured) in service.backends.iter_mut().zip(&configured.backends) {
                backend.weight = configured.weight;
            }
            service.table = table;
        }
        Ok(snapshot)
    }
}

fn check_table(
    service: &crate::config::ServiceConfig,
    table: Option<&MaglevTable>,
) -> Result<(), PartsError> {
    let weighted = service.backends.iter().any(|backend| backend.weight > 0);
    let table = match (weighted, table) {
        (false, None) => return Ok(()),
        (false, Some(_)) => {
            return Err(PartsError::UnexpectedTable {
                service: service.name.clone(),
            })
        }
        (true, None) => {
            return Err(PartsError::MissingTable {
                service: service.name.clone(),
            })
        }
        (true, Some(table)) => table,
    };

    if table.size() != service.table_size {
        return Err(PartsError::TableSize {
            service: service.name.clone(),
            expected: service.table_size,
            actual: table.size(),
        });
    }
    let ids_match = table.ids().len() == service.backends.len()
        && table
            .ids()
            .iter()
            .zip(&service.backends)
            .all(|(&id, backend)| id == backend_id(backend.address));
    if !ids_match {
        return Err(PartsError::BackendMismatch {
            service: service.name.clone(),
        });
    }
    for (backend, slots) in service.backends.iter().zip(table.slot_counts()) {
        if backend.weight == 0 && slots > 0 {
            return Err(PartsError::ZeroWeightSlots {
                service: service.name.clone(),
                backend: backend.name.clone(),
                slots,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::MaglevBackend;

    const CONFIG: &str = r#"
        [node]
        mac = "02:00:00:00:00:01"
        ipv4 = "192.0.2.1"
        gateway_mac = "02:00:00:00:00:fe"
        vtep_mac = "02:00:00:00:00:02"

        [hash]
        key = "000102030405060708090a0b0c0d0e0f"

        [[service]]
        name = "web"
        vip = "198.51.100.1"
        protocol = "tcp"
        port = 80
        table_size = 13

        [[service.backend]]
        address = "192.0.2.11"
        vtep_mac = "0a:58:0a:f4:00:0a"

        [[service.backend]]
        address = "192.0.2.12"
        vtep_mac = "0a:58:0a:f4:00:0b"
        weight = 0

        [[service]]
        name = "empty"
        vip = "198.51.100.2"
        protocol = "udp"
        port = 53
    "#;

    fn config() -> Config {
        CONFIG.parse().unwrap()
    }

    fn table_for(config: &Config, size: u32) -> Arc<MaglevTable> {
        let backends: Vec<MaglevBackend> = config.services[0]
            .backends
            .iter()
            .map(|backend| MaglevBackend {
                id: backend_id(backend.address),
                weight: backend.weight,
            })
            .collect();
        Arc::new(MaglevTable::build(&backends, size).unwrap())
    }

    #[test]
    fn from_parts_matches_build() {
        let config = config();
        let built = Snapshot::build(&config, 4).unwrap();
        let parts =
            Snapshot::from_parts(&config, 4, vec![Some(table_for(&config, 13)), None]).unwrap();

        assert_eq!(parts.generation, 4);
        for (left, right) in built.services.iter().zip(&parts.services) {
            assert_eq!(left.name, right.name);
            let weights = |service: &crate::snapshot::Service| -> Vec<u32> {
                service
                    .backends
                    .iter()
                    .map(|backend| backend.weight)
                    .collect()
            };
            assert_eq!(weights(left), weights(right));
            let slots = |service: &crate::snapshot::Service| {
                service.table.as_ref().map(|table| table.entries().to_vec())
            };
            assert_eq!(slots(left), slots(right));
        }
    }

    #[test]
    fn build_shares_tables_of_equal_backend_sets() {
        let mut config = config();
        let mut twin = config.services[0].clone();
        twin.name = "web-twin".to_owned();
        twin.port = 8080;
        config.services.push(twin.clone());
        twin.name = "web-other-size".to_owned();
        twin.port = 8081;
        twin.table_size = 11;
        config.services.push(twin);

        let snapshot = Snapshot::build(&config, 1).unwrap();
        let table = |index: usize| snapshot.services[index].table.as_ref().unwrap();
        assert!(Arc::ptr_eq(table(0), table(2)), "equal sets got two tables");
        assert!(
            !Arc::ptr_eq(table(0), table(3)),
            "different sizes shared a table"
        );
        assert_eq!(table(3).size(), 11);
    }

    #[test]
    fn from_parts_rejects_misfit_tables() {
        let config = config();
        let good = table_for(&config, 13);
        let wrong_size = table_for(&config, 11);
        let reversed = MaglevTable::from_slots(
            good.ids().iter().rev().copied().collect(),
            good.entries().to_vec(),
        )
        .map(Arc::new)
        .unwrap();
        let zero_weight_slot = MaglevTable::from_slots(good.ids().to_vec(), vec![1; 13])
            .map(Arc::new)
            .unwrap();

        let cases: Vec<(&str, Vec<Option<Arc<MaglevTable>>>)> = vec![
            ("one table too few", vec![Some(good.clone())]),
            ("missing table", vec![None, None]),
            (
                "table for empty service",
                vec![Some(good.clone()), Some(good.clone())],
            ),
            ("wrong size", vec![Some(wrong_size), None]),
            ("backends reordered", vec![Some(reversed), None]),
            ("slot for weight 0", vec![Some(zero_weight_slot), None]),
        ];
        for (case, tables) in cases {
            assert!(
                Snapshot::from_parts(&config, 1, tables).is_err(),
                "{case} was accepted"
            );
        }
    }

    #[test]
    fn from_slots_rejects_out_of_range_index() {
        let error = MaglevTable::from_slots(vec![1, 2], vec![0, 1, 2]).unwrap_err();
        assert_eq!(
            error,
            crate::maglev::SlotsError::IndexOutOfRange {
                slot: 2,
                index: 2,
                backends: 2
            }
        );
        assert!(MaglevTable::from_slots(vec![1, 1], vec![0, 1, 0]).is_err());
        assert!(MaglevTable::from_slots(vec![1], vec![0; 4]).is_err());
        assert!(MaglevTable::from_slots(vec![], vec![0; 3]).is_err());
    }
}
