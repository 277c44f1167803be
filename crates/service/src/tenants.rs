//! The tenant directory: which business phone number, WABA and token belong to which tenant.
//!
//! The default tenant comes from `DEFAULT_TENANT_ID` (`default`), `WHATSAPP_PHONE_NUMBER_ID`,
//! `WHATSAPP_BUSINESS_ACCOUNT_ID` and `WHATSAPP_ACCESS_TOKEN`; more tenants from `TENANTS_FILE`, a
//! JSON array of `{"tenant_id", "phone_number_id", "waba_id", "access_token", "time_zone"?}`
//! (`time_zone` defaults to `Asia/Jakarta`). Tokens are secrets: they never appear in `Debug`.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use crate::env::{self, ConfigError};

/// Time zone used when a tenant does not name one (most jamaah are in western Indonesia).
pub const DEFAULT_TIME_ZONE: &str = "Asia/Jakarta";

/// One tenant's WhatsApp identity.
#[derive(Clone, Deserialize)]
pub struct Tenant {
    /// The platform's tenant id.
    pub tenant_id: String,
    /// Business phone number id (Graph API path segment, webhook `metadata.phone_number_id`).
    pub phone_number_id: String,
    /// WhatsApp Business Account id (webhook `entry[].id`, template management).
    pub waba_id: String,
    /// System-user access token.
    pub access_token: SecretString,
    /// IANA time zone for reminder windows.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.to_owned()
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("tenant_id", &self.tenant_id)
            .field("phone_number_id", &self.phone_number_id)
            .field("waba_id", &self.waba_id)
            .field("access_token", &"[redacted]")
            .field("time_zone", &self.time_zone)
            .finish()
    }
}

/// All tenants, looked up by tenant id or by business phone number id.
#[derive(Debug, Clone, Default)]
pub struct TenantDirectory {
    by_id: HashMap<String, Arc<Tenant>>,
    by_phone_number_id: HashMap<String, Arc<Tenant>>,
    by_waba_id: HashMap<String, Arc<Tenant>>,
}

impl TenantDirectory {
    /// Builds the directory from the environment (see the module docs). Fails naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut tenants = Vec::new();
        if let Some(phone_number_id) = env::var("WHATSAPP_PHONE_NUMBER_ID") {
            tenants.push(Tenant {
                tenant_id: env::var_or("DEFAULT_TENANT_ID", "default"),
                phone_number_id,
                waba_id: env::required_var("WHATSAPP_BUSINESS_ACCOUNT_ID")?,
                access_token: env::secret_var("WHATSAPP_ACCESS_TOKEN")?,
                time_zone: default_time_zone(),
            });
        }
        if let Some(path) = env::var("TENANTS_FILE") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| env::invalid("TENANTS_FILE", format!("cannot read {path}: {e}")))?;
            let more: Vec<Tenant> = serde_json::from_str(&text).map_err(|e| {
                env::invalid(
                    "TENANTS_FILE",
                    format!("{path} is not a JSON array of tenants: {e}"),
                )
            })?;
            tenants.extend(more);
        }
        Self::new(tenants).map_err(|reason| env::invalid("TENANTS_FILE", reason))
    }

    /// Builds a directory from explicit tenants; rejects duplicates and unknown time zones.
    pub fn new(tenants: Vec<Tenant>) -> Result<Self, String> {
        let mut directory = Self::default();
        for tenant in tenants {
            if tenant.tenant_id.trim().is_empty() || tenant.phone_number_id.trim().is_empty() {
                return Err("every tenant needs a tenant_id and a phone_number_id".into());
            }
            if tenant.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(format!(
                    "tenant {} has unknown time zone {:?}",
                    tenant.tenant_id, tenant.time_zone
                ));
            }
            let tenant = Arc::new(tenant);
            if directory
                .by_id
                .insert(tenant.tenant_id.clone(), tenant.clone())
                .is_some()
            {
                return Err(format!("tenant {} is defined twice", tenant.tenant_id));
            }
            if directory
                .by_phone_number_id
                .insert(tenant.phone_number_id.clone(), tenant.clone())
                .is_some()
            {
                return Err(format!(
                    "phone number id {} belongs to two tenants",
                    tenant.phone_number_id
                ));
            }
            directory
                .by_waba_id
                .entry(tenant.waba_id.clone())
                .or_insert(tenant);
        }
        Ok(directory)
    }

    /// The tenant with this id.
    pub fn get(&self, tenant_id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(tenant_id)
    }

    /// The tenant owning this business phone number id (webhook routing).
    pub fn by_phone_number_id(&self, phone_number_id: &str) -> Option<&Arc<Tenant>> {
        self.by_phone_number_id.get(phone_number_id)
    }

    /// The first tenant of this WABA (template webhooks carry only the WABA).
    pub fn by_waba_id(&self, waba_id: &str) -> Option<&Arc<Tenant>> {
        self.by_waba_id.get(waba_id)
    }

    /// Every tenant.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no tenant is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, phone: &str) -> Tenant {
        Tenant {
            tenant_id: id.into(),
            phone_number_id: phone.into(),
            waba_id: "waba".into(),
            access_token: SecretString::from("secret-token"),
            time_zone: DEFAULT_TIME_ZONE.into(),
        }
    }

    #[test]
    fn looks_up_by_id_and_phone_number_id_and_hides_tokens() {
        let directory =
            TenantDirectory::new(vec![tenant("a", "1"), tenant("b", "2")]).expect("valid");
        assert_eq!(
            directory.get("b").map(|t| t.phone_number_id.as_str()),
            Some("2")
        );
        assert_eq!(
            directory
                .by_phone_number_id("1")
                .map(|t| t.tenant_id.as_str()),
            Some("a")
        );
        assert!(!format!("{directory:?}").contains("secret-token"));
    }

    #[test]
    fn rejects_duplicates_and_bad_time_zones() {
        assert!(TenantDirectory::new(vec![tenant("a", "1"), tenant("a", "2")]).is_err());
        assert!(TenantDirectory::new(vec![tenant("a", "1"), tenant("b", "1")]).is_err());
        let mut bad = tenant("c", "3");
        bad.time_zone = "Mars/Olympus".into();
        assert!(TenantDirectory::new(vec![bad]).is_err());
    }

    #[test]
    fn tenants_file_json_parses() {
        let parsed: Vec<Tenant> = serde_json::from_str(
            r#"[{"tenant_id":"mekah-tour","phone_number_id":"200","waba_id":"300","access_token":"t","time_zone":"Asia/Makassar"}]"#,
        )
        .expect("json");
        let directory = TenantDirectory::new(parsed).expect("valid");
        assert_eq!(
            directory.get("mekah-tour").map(|t| t.time_zone.as_str()),
            Some("Asia/Makassar")
        );
    }
}
