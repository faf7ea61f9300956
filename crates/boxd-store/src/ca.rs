//! The egress proxy's certificate authority: its certificate in clear and
//! its private key sealed with the master keys (bound to the certificate,
//! so a key cannot be paired with another certificate in the database).
//!
//! Owns the one-row `boxd_ca` table. Never stores or returns the key
//! unsealed, and never generates a CA (the network layer does).

use crate::crypto::{Aad, MasterKeys, Sealed, SecretKind, NONCE_LEN};
use crate::error::{sqlite_code, Result, StoreError, PRIMARY_KEY};
use crate::secrets::SealedValue;
use crate::{now_ms, Store};
use rusqlite::{params, OptionalExtension};

/// The stored CA: the certificate and its sealed private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key: SealedValue,
}

/// What the CA key's sealing binds to: no team, no box, the certificate.
fn ca_aad(cert_pem: &str) -> Aad {
    Aad {
        team_id: String::new(),
        box_id: None,
        kind: SecretKind::CaKey,
        name: "boxd-ca".into(),
        scope: cert_pem.to_owned(),
    }
}

impl Store {
    /// Stores the CA (certificate + private key, sealed). There is one CA:
    /// a second call is a `Conflict`, so two daemons racing at first start
    /// cannot replace each other's.
    pub fn put_ca(&self, keys: &MasterKeys, cert_pem: &str, key_der: &[u8]) -> Result<()> {
        let sealed = keys.seal(&ca_aad(cert_pem), key_der)?;
        self.conn()
            .execute(
                "INSERT INTO boxd_ca (id, cert_pem, key_id, nonce, ciphertext, created_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![
                    cert_pem,
                    sealed.key_id,
                    sealed.nonce.as_slice(),
                    sealed.ciphertext,
                    now_ms()
                ],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(PRIMARY_KEY) => StoreError::Conflict("the CA is already stored".into()),
                _ => e.into(),
            })?;
        Ok(())
    }

    /// The stored CA, if one was stored.
    pub fn ca(&self) -> Result<Option<StoredCa>> {
        let row = self
            .conn()
            .query_row(
                "SELECT cert_pem, key_id, nonce, ciphertext FROM boxd_ca WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((cert_pem, key_id, nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let nonce: [u8; NONCE_LEN] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Invalid("stored CA key nonce".into()))?;
        Ok(Some(StoredCa {
            key: SealedValue {
                aad: ca_aad(&cert_pem),
                sealed: Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                },
            },
            cert_pem,
        }))
    }

    /// Re-seals the CA key under `keys`' current key (part of rotation);
    /// whether it had to be rewritten.
    pub(crate) fn reseal_ca(&self, keys: &MasterKeys) -> Result<bool> {
        let Some(ca) = self.ca()? else {
            return Ok(false);
        };
        if ca.key.sealed.key_id == keys.current_id() {
            return Ok(false);
        }
        let plaintext = ca.key.open(keys)?;
        let sealed = keys.seal(&ca.key.aad, &plaintext)?;
        self.conn().execute(
            "UPDATE boxd_ca SET key_id = ?1, nonce = ?2, ciphertext = ?3 WHERE id = 1",
            params![sealed.key_id, sealed.nonce.as_slice(), sealed.ciphertext],
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_key_is_sealed_bound_to_its_certificate_and_stored_once() {
        let dir = crate::crypto::tests::TempDir::new("ca");
        let keys = MasterKeys::load_or_create(&dir.key_file()).unwrap();
        let store = Store::open_in_memory().unwrap();
        assert!(store.ca().unwrap().is_none());
        let key = b"-----secret ca key bytes-----";
        store.put_ca(&keys, "CERT PEM", key).unwrap();
        assert!(matches!(
            store.put_ca(&keys, "OTHER", b"k"),
            Err(StoreError::Conflict(_))
        ));
        let ca = store.ca().unwrap().unwrap();
        assert_eq!(ca.cert_pem, "CERT PEM");
        assert!(!ca
            .key
            .sealed
            .ciphertext
            .windows(key.len())
            .any(|w| w == key));
        assert_eq!(ca.key.open(&keys).unwrap().as_slice(), key);
        // The key does not open against another certificate.
        let mut swapped = ca.key.clone();
        swapped.aad = ca_aad("OTHER CERT");
        assert!(swapped.open(&keys).is_err());
        // Rotation moves it to the new key.
        MasterKeys::rotate(&dir.key_file()).unwrap();
        let rotated = MasterKeys::load(&dir.key_file()).unwrap();
        assert!(store.reseal_ca(&rotated).unwrap());
        let ca = store.ca().unwrap().unwrap();
        assert_eq!(ca.key.sealed.key_id, rotated.current_id());
        assert_eq!(ca.key.open(&rotated).unwrap().as_slice(), key);
    }
}
