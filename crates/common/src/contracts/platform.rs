//! Events the platform publishes on `platform.events`.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ensure, ensure_not_blank};
use crate::ids::{AgentId, JamaahId, PackageId, PaymentId, ScheduleId, TenantId};
use crate::{Contract, ContractError};

/// `jamaah.upserted`: a jamaah was registered or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JamaahUpserted {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The platform's jamaah id.
    pub jamaah_id: JamaahId,
    /// Full name.
    pub name: String,
    /// Phone in any usual form.
    pub phone: String,
    /// The platform's word: `registered`, `ready`, `departed`, `cancelled`, …
    pub status: String,
    /// The package the jamaah is booked on.
    pub package: PackageRef,
    /// The agent who looks after the jamaah.
    pub agent: AgentRef,
}

/// A package as referenced in `jamaah.upserted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageRef {
    /// Package id.
    pub id: PackageId,
    /// Package name, e.g. `Umrah Reguler Desember 2026`.
    pub name: String,
}

/// An agent as referenced in `jamaah.upserted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentRef {
    /// Agent id.
    pub id: AgentId,
    /// Agent name (template parameter).
    pub name: String,
    /// Agent phone as printed in templates.
    pub phone: String,
}

impl Contract for JamaahUpserted {
    const SCHEMA_NAME: &'static str = "jamaah-upserted";

    fn validate(&self) -> Result<(), ContractError> {
        ensure_not_blank(&self.name, "name")?;
        ensure_not_blank(&self.phone, "phone")?;
        ensure_not_blank(&self.status, "status")?;
        ensure_not_blank(&self.package.name, "package.name")?;
        ensure_not_blank(&self.agent.name, "agent.name")
    }
}

/// Status of an instalment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    /// Still to be paid: reminders apply.
    Unpaid,
    /// Paid: no further reminders.
    Paid,
    /// Cancelled: no further reminders.
    Cancelled,
}

impl ScheduleStatus {
    /// The snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "unpaid",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }
}

/// `payment_schedule.upserted`: an instalment (cicilan) was created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentScheduleUpserted {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The instalment id.
    pub schedule_id: ScheduleId,
    /// Who pays it.
    pub jamaah_id: JamaahId,
    /// For which package.
    pub package_id: PackageId,
    /// Due date (`YYYY-MM-DD`, the tenant's local date).
    pub due_date: NaiveDate,
    /// Amount in whole rupiah.
    pub amount: i64,
    /// Unpaid, paid or cancelled.
    pub status: ScheduleStatus,
}

impl Contract for PaymentScheduleUpserted {
    const SCHEMA_NAME: &'static str = "payment-schedule-upserted";

    fn validate(&self) -> Result<(), ContractError> {
        ensure(
            self.amount > 0,
            "amount",
            "must be a positive number of rupiah",
        )
    }
}

/// `payment.recorded`: the platform recorded a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRecorded {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The payment id (one confirmation per payment id).
    pub payment_id: PaymentId,
    /// Who paid.
    pub jamaah_id: JamaahId,
    /// For which package.
    pub package_id: PackageId,
    /// Amount paid, whole rupiah.
    pub amount: i64,
    /// Still to pay after this payment, whole rupiah.
    pub remaining_balance: i64,
    /// The platform's label, e.g. `Cicilan 2 dari 5` or `Lunas`.
    pub status_label: String,
}

impl Contract for PaymentRecorded {
    const SCHEMA_NAME: &'static str = "payment-recorded";

    fn validate(&self) -> Result<(), ContractError> {
        ensure(
            self.amount > 0,
            "amount",
            "must be a positive number of rupiah",
        )?;
        ensure(
            self.remaining_balance >= 0,
            "remaining_balance",
            "must not be negative",
        )?;
        ensure_not_blank(&self.status_label, "status_label")
    }
}

/// `departure.scheduled`: a package got (or changed) its departure date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DepartureScheduled {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The package.
    pub package_id: PackageId,
    /// Package name for the template.
    pub package_name: String,
    /// Departure date (`YYYY-MM-DD`).
    pub departure_date: NaiveDate,
}

impl Contract for DepartureScheduled {
    const SCHEMA_NAME: &'static str = "departure-scheduled";

    fn validate(&self) -> Result<(), ContractError> {
        ensure_not_blank(&self.package_name, "package_name")
    }
}

/// `jamaah.erasure_requested`: delete everything we hold about this jamaah.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JamaahErasureRequested {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The jamaah to forget.
    pub jamaah_id: JamaahId,
}

impl Contract for JamaahErasureRequested {
    const SCHEMA_NAME: &'static str = "jamaah-erasure-requested";
}
