//! Integration tests for `wa_db` against the local PostgreSQL. Every test gets its own database
//! from `wa_testkit::db::TestDb` (cloned from a migrated template), so they run in parallel.

mod constraints;
mod migrations;
mod processed_events;
mod send_leases;
mod send_slots;
mod tenants;
mod test_db;
