//! `tenants`: the business phone numbers we serve. Loaded from configuration at start-up with
//! [`Tenant::upsert`]; access tokens are secrets and are never stored here.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::tenants;

/// A tenant row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = tenants, primary_key(tenant_id), check_for_backend(diesel::pg::Pg))]
pub struct Tenant {
    /// Our id for the tenant (`DEFAULT_TENANT_ID` for the default one).
    pub tenant_id: String,
    /// Meta's phone-number id; webhooks are routed to the tenant by it (unique).
    pub phone_number_id: String,
    /// The WhatsApp Business Account that owns the number (templates live there).
    pub waba_id: String,
    /// Human-readable name for logs and dashboards.
    pub display_name: Option<String>,
    /// IANA time zone for send windows and dates shown to jamaah.
    pub time_zone: String,
    /// Set while sending is paused for this tenant.
    pub paused_at: Option<DateTime<Utc>>,
    /// Why sending is paused.
    pub pause_reason: Option<String>,
    /// When the row was first inserted.
    pub created_at: DateTime<Utc>,
    /// Last real change (kept by a trigger; a no-op upsert leaves it alone).
    pub updated_at: DateTime<Utc>,
}

/// The configuration-owned fields of a tenant; the pause state is operational and is not
/// touched by [`Tenant::upsert`].
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = tenants)]
pub struct NewTenant<'a> {
    /// See [`Tenant::tenant_id`].
    pub tenant_id: &'a str,
    /// See [`Tenant::phone_number_id`].
    pub phone_number_id: &'a str,
    /// See [`Tenant::waba_id`].
    pub waba_id: &'a str,
    /// See [`Tenant::display_name`].
    pub display_name: Option<&'a str>,
    /// `None` uses the column default, `Asia/Jakarta`.
    pub time_zone: Option<&'a str>,
}

impl Tenant {
    /// Inserts the tenant or, when `tenant_id` exists, overwrites its configuration fields
    /// (configuration is the source of truth) and returns the stored row.
    ///
    /// Fails with a unique violation if another tenant already has `phone_number_id`.
    pub async fn upsert(conn: &mut AsyncPgConnection, new: &NewTenant<'_>) -> QueryResult<Tenant> {
        diesel::insert_into(tenants::table)
            .values(new)
            .on_conflict(tenants::tenant_id)
            .do_update()
            .set((
                tenants::phone_number_id.eq(excluded(tenants::phone_number_id)),
                tenants::waba_id.eq(excluded(tenants::waba_id)),
                tenants::display_name.eq(excluded(tenants::display_name)),
                tenants::time_zone.eq(excluded(tenants::time_zone)),
            ))
            .returning(Tenant::as_returning())
            .get_result(conn)
            .await
    }

    /// The tenant with this id, if any.
    pub async fn find(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
    ) -> QueryResult<Option<Tenant>> {
        tenants::table
            .find(tenant_id)
            .select(Tenant::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The tenant that owns Meta's `phone_number_id` (how webhooks find their tenant), if any.
    pub async fn find_by_phone_number_id(
        conn: &mut AsyncPgConnection,
        phone_number_id: &str,
    ) -> QueryResult<Option<Tenant>> {
        tenants::table
            .filter(tenants::phone_number_id.eq(phone_number_id))
            .select(Tenant::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Every tenant, ordered by id.
    pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Tenant>> {
        tenants::table
            .order(tenants::tenant_id)
            .select(Tenant::as_select())
            .load(conn)
            .await
    }
}
