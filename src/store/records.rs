//! What the trees hold. Changing a field here changes the on-disk format:
//! bump [`super::encoding::VALUE_VERSION`] and keep a decoder for the old one.

use serde::{Deserialize, Serialize};

use crate::crypto::password::HashScheme;
use crate::model::{App, BoxId, Customer, CustomerFlags, Timestamp, UserCode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CustomerRecord {
    pub box_id: BoxId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub flags: CustomerFlags,
    pub enrolment_date: Timestamp,
    pub activation_date: Option<Timestamp>,
    pub scheme: HashScheme,
    pub password_hash: String,
    pub sealed_key: Vec<u8>,
    pub key_epoch: u32,
    pub credential_version: u64,
    pub failed_logins: u32,
    pub locked_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ids of this customer's outstanding resets, so that a rotation can remove
    /// them inside its transaction (sled transactions cannot scan).
    pub resets: Vec<String>,
}

impl CustomerRecord {
    pub fn to_public(&self) -> Customer {
        Customer {
            box_id: self.box_id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            flags: self.flags,
            enrolment_date: self.enrolment_date,
            activation_date: self.activation_date,
            credential_version: self.credential_version,
            failed_logins: self.failed_logins,
            locked_until: self.locked_until,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    pub user_code: UserCode,
    pub shop_key: Option<String>,
    pub name: String,
    pub sealed_key: Vec<u8>,
    pub key_epoch: u32,
    pub enabled: bool,
    pub created_at: Timestamp,
}

impl AppRecord {
    pub fn to_public(&self) -> App {
        App {
            user_code: self.user_code,
            shop_key: self.shop_key.clone(),
            name: self.name.clone(),
            enabled: self.enabled,
            created_at: self.created_at,
        }
    }
}
