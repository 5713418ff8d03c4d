//! The Forward protocol's handshake, sans-IO. With a shared key the server speaks first:
//!
//! ```text
//! server → HELO  ["HELO", {"nonce": n, "auth": user_auth_salt or "", "keepalive": true}]
//! client → PING  ["PING", client_hostname, shared_key_salt,
//!                 sha512_hex(shared_key_salt + client_hostname + nonce + shared_key),
//!                 username, sha512_hex(user_auth_salt + username + password)]
//! server → PONG  ["PONG", authenticated, reason, server_hostname,
//!                 sha512_hex(shared_key_salt + server_hostname + nonce + shared_key)]
//! ```
//! (username and password digest are empty strings without user authentication.)
//! Fluent Bit: plugins/out_forward/forward.c (`secure_forward_*`), plugins/in_forward/fw_prot.c.

use std::sync::Arc;

use sha2::{Digest, Sha512};

use crate::event::format::{read_array_len, read_msgpack_value, write_msgpack_value, DecodeError};
use crate::event::Value;

/// Lower-case hex SHA-512 of the parts, concatenated.
pub fn sha512_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 random bytes (nonces and salts).
pub fn random_bytes() -> Vec<u8> {
    let mut rng = fastrand::Rng::new();
    (0..16).map(|_| rng.u8(..)).collect()
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::Bin(b) => Some(b.to_vec()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn str(s: &str) -> Value {
    Value::Str(Arc::from(s))
}

fn bin(b: &[u8]) -> Value {
    Value::Bin(Arc::from(b))
}

/// Reads a frame that is an array whose first element is `word`.
fn read_words(frame: &[u8], word: &str, n: u64) -> Result<Vec<Value>, DecodeError> {
    let mut pos = 0;
    let len = read_array_len(frame, &mut pos)?;
    let bad = || DecodeError::Invalid(format!("a {word} message"));
    if len != n {
        return Err(bad());
    }
    let items = (0..n)
        .map(|_| read_msgpack_value(frame, &mut pos))
        .collect::<Result<Vec<_>, _>>()?;
    if text(&items[0]).as_deref() != Some(word) || pos != frame.len() {
        return Err(bad());
    }
    Ok(items)
}

/// What the server's HELO says.
#[derive(Debug, PartialEq)]
pub struct Helo {
    pub nonce: Vec<u8>,
    /// Empty when the server does not authenticate users.
    pub auth_salt: Vec<u8>,
}

pub fn write_helo(out: &mut Vec<u8>, helo: &Helo) {
    let opts = Value::Map(vec![
        (Arc::from("nonce"), bin(&helo.nonce)),
        (Arc::from("auth"), bin(&helo.auth_salt)),
        (Arc::from("keepalive"), Value::Bool(true)),
    ]);
    write_msgpack_value(out, &Value::Array(vec![str("HELO"), opts]));
}

pub fn read_helo(frame: &[u8]) -> Result<Helo, DecodeError> {
    let items = read_words(frame, "HELO", 2)?;
    let Value::Map(opts) = &items[1] else {
        return Err(DecodeError::Invalid("HELO options".into()));
    };
    let get = |k: &str| {
        opts.iter()
            .find(|(x, _)| &**x == k)
            .and_then(|(_, v)| bytes(v))
    };
    Ok(Helo {
        nonce: get("nonce").ok_or_else(|| DecodeError::Invalid("a HELO without nonce".into()))?,
        auth_salt: get("auth").unwrap_or_default(),
    })
}

/// The client's PING.
#[derive(Debug, PartialEq)]
pub struct Ping {
    pub hostname: String,
    pub shared_key_salt: Vec<u8>,
    pub digest: String,
    pub username: String,
    pub password_digest: String,
}

impl Ping {
    /// A PING answering `helo`.
    pub fn new(helo: &Helo, hostname: &str, shared_key: &str, user: Option<(&str, &str)>) -> Ping {
        let salt = random_bytes();
        let digest = sha512_hex(&[
            &salt,
            hostname.as_bytes(),
            &helo.nonce,
            shared_key.as_bytes(),
        ]);
        let (username, password_digest) = match user {
            Some((u, p)) => (
                u.to_string(),
                sha512_hex(&[&helo.auth_salt, u.as_bytes(), p.as_bytes()]),
            ),
            None => (String::new(), String::new()),
        };
        Ping {
            hostname: hostname.to_string(),
            shared_key_salt: salt,
            digest,
            username,
            password_digest,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        write_msgpack_value(
            out,
            &Value::Array(vec![
                str("PING"),
                str(&self.hostname),
                bin(&self.shared_key_salt),
                str(&self.digest),
                str(&self.username),
                str(&self.password_digest),
            ]),
        );
    }

    pub fn read(frame: &[u8]) -> Result<Ping, DecodeError> {
        let items = read_words(frame, "PING", 6)?;
        let t =
            |i: usize| text(&items[i]).ok_or_else(|| DecodeError::Invalid("a PING field".into()));
        Ok(Ping {
            hostname: t(1)?,
            shared_key_salt: bytes(&items[2]).unwrap_or_default(),
            digest: t(3)?,
            username: t(4)?,
            password_digest: t(5)?,
        })
    }

    /// The server's check: `Err(reason)` for the PONG.
    pub fn verify(
        &self,
        helo: &Helo,
        shared_key: &str,
        users: &[(String, String)],
    ) -> Result<(), &'static str> {
        let want = sha512_hex(&[
            &self.shared_key_salt,
            self.hostname.as_bytes(),
            &helo.nonce,
            shared_key.as_bytes(),
        ]);
        if !same_digest(&want, &self.digest) {
            return Err("shared_key mismatch");
        }
        if users.is_empty() {
            return Ok(());
        }
        // Every user is checked (no early exit), each in constant time: how long the
        // answer takes tells nothing about which user or which byte was wrong.
        let ok = users.iter().fold(false, |ok, (u, p)| {
            let want = sha512_hex(&[&helo.auth_salt, u.as_bytes(), p.as_bytes()]);
            ok | (same_digest(u, &self.username) & same_digest(&want, &self.password_digest))
        });
        if ok {
            Ok(())
        } else {
            Err("username/password mismatch")
        }
    }
}

/// `a == b` in time that depends on the lengths only, not on where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The server's PONG.
#[derive(Debug, PartialEq)]
pub struct Pong {
    pub ok: bool,
    pub reason: String,
    pub hostname: String,
    pub digest: String,
}

impl Pong {
    /// The server's answer to `ping`. A refusal carries the reason only, with an empty
    /// hostname and digest as Fluent Bit sends it: a digest computed with the real key
    /// for a client that does not know it would let that client recover a weak key
    /// offline.
    pub fn new(
        ping: &Ping,
        helo: &Helo,
        result: Result<(), &str>,
        hostname: &str,
        key: &str,
    ) -> Pong {
        match result {
            Ok(()) => Pong {
                ok: true,
                reason: String::new(),
                hostname: hostname.to_string(),
                digest: sha512_hex(&[
                    &ping.shared_key_salt,
                    hostname.as_bytes(),
                    &helo.nonce,
                    key.as_bytes(),
                ]),
            },
            Err(reason) => Pong {
                ok: false,
                reason: reason.to_string(),
                hostname: String::new(),
                digest: String::new(),
            },
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        write_msgpack_value(
            out,
            &Value::Array(vec![
                str("PONG"),
                Value::Bool(self.ok),
                str(&self.reason),
                str(&self.hostname),
                str(&self.digest),
            ]),
        );
    }

    pub fn read(frame: &[u8]) -> Result<Pong, DecodeError> {
        let items = read_words(frame, "PONG", 5)?;
        let t =
            |i: usize| text(&items[i]).ok_or_else(|| DecodeError::Invalid("a PONG field".into()));
        Ok(Pong {
            ok: items[1] == Value::Bool(true),
            reason: t(2)?,
            hostname: t(3)?,
            digest: t(4)?,
        })
    }

    /// The client's check that the server knows the key too.
    pub fn verify(&self, ping: &Ping, helo: &Helo, key: &str) -> Result<(), String> {
        if !self.ok {
            return Err(format!("authentication failed: {}", self.reason));
        }
        let want = sha512_hex(&[
            &ping.shared_key_salt,
            self.hostname.as_bytes(),
            &helo.nonce,
            key.as_bytes(),
        ]);
        if !same_digest(&want, &self.digest) {
            return Err("the server's PONG digest does not match shared_key".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_of_known_input() {
        // sha512("abc"), FIPS 180-2 appendix C.1.
        assert_eq!(
            sha512_hex(&[b"a", b"bc"]),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn handshake_round_trip_and_failures() {
        let helo = Helo {
            nonce: random_bytes(),
            auth_salt: random_bytes(),
        };
        let mut f = Vec::new();
        write_helo(&mut f, &helo);
        assert_eq!(read_helo(&f).unwrap(), helo);

        let users = vec![("alice".to_string(), "pw".to_string())];
        let ping = Ping::new(&helo, "node-1", "key", Some(("alice", "pw")));
        let mut f = Vec::new();
        ping.write(&mut f);
        let got = Ping::read(&f).unwrap();
        assert_eq!(got, ping);
        assert_eq!(got.verify(&helo, "key", &users), Ok(()));
        assert_eq!(
            got.verify(&helo, "other", &users),
            Err("shared_key mismatch")
        );
        let wrong = Ping::new(&helo, "node-1", "key", Some(("alice", "nope")));
        assert_eq!(
            wrong.verify(&helo, "key", &users),
            Err("username/password mismatch")
        );

        let pong = Pong::new(&got, &helo, Ok(()), "agg", "key");
        let mut f = Vec::new();
        pong.write(&mut f);
        let back = Pong::read(&f).unwrap();
        assert_eq!(back.verify(&ping, &helo, "key"), Ok(()));
        assert!(back.verify(&ping, &helo, "k2").is_err());
        let refused = Pong::new(&got, &helo, Err("shared_key mismatch"), "agg", "key");
        assert_eq!(
            (refused.hostname.as_str(), refused.digest.as_str()),
            ("", "")
        );
        assert_eq!(
            refused.verify(&ping, &helo, "key").unwrap_err(),
            "authentication failed: shared_key mismatch"
        );
    }
}
