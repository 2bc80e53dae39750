//! What counts as an e-mail address here, and its one stored form. The rules are a sanity check,
//! not RFC 5321: enough that a typo is caught and that one address has one form (so the blind
//! index finds it again), never so strict that a real address is refused.

/// An address as stored: trimmed, the domain lowercased, the local part as given (some mail
/// servers tell `Ann` from `ann`).
#[derive(Clone, PartialEq, Eq)]
pub struct Address(String);

// Deliberately not Debug-printable as itself: an address must never reach a log line.
impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Address(..)")
    }
}

/// Longest address (RFC 5321's path limit, less the angle brackets).
pub const MAX_ADDRESS_CHARS: usize = 254;
const MAX_LOCAL_CHARS: usize = 64;
const MAX_LABEL_CHARS: usize = 63;

/// Why an address was refused; each is said to the person in the 400 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than 254 characters")]
    TooLong,
    #[error("an address has exactly one @")]
    NotOneAt,
    #[error("the part before the @ must be 1 to 64 characters without spaces")]
    BadLocalPart,
    #[error("the part after the @ must be a domain name with a dot, like example.org")]
    BadDomain,
}

impl Address {
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        if trimmed.chars().count() > MAX_ADDRESS_CHARS {
            return Err(AddressError::TooLong);
        }
        let mut parts = trimmed.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AddressError::NotOneAt);
        };
        let local_ok = !local.is_empty()
            && local.chars().count() <= MAX_LOCAL_CHARS
            && !local.chars().any(|c| c.is_whitespace() || c.is_control());
        if !local_ok {
            return Err(AddressError::BadLocalPart);
        }
        let domain = domain.to_lowercase();
        let mut labels = 0;
        for label in domain.split('.') {
            labels += 1;
            // Letters (any script: internationalised domains), digits and inner hyphens.
            let label_ok = !label.is_empty()
                && label.chars().count() <= MAX_LABEL_CHARS
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-');
            if !label_ok {
                return Err(AddressError::BadDomain);
            }
        }
        if labels < 2 {
            return Err(AddressError::BadDomain);
        }
        Ok(Address(format!("{local}@{domain}")))
    }

    /// Rebuilds an address decrypted from the store; it was valid when stored.
    pub(crate) fn from_stored(text: String) -> Address {
        Address(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> Result<String, AddressError> {
        Address::parse(input).map(|address| address.as_str().to_owned())
    }

    #[test]
    fn trims_lowercases_the_domain_and_keeps_the_local_part() {
        assert_eq!(
            parsed("  Ann.Lee+news@Example.ORG \n").unwrap(),
            "Ann.Lee+news@example.org"
        );
        assert_eq!(parsed("bo@MÜNCHEN.de").unwrap(), "bo@münchen.de");
        assert_eq!(parsed("x@a-b.co.uk").unwrap(), "x@a-b.co.uk");
    }

    #[test]
    fn refuses_what_cannot_be_an_address() {
        assert_eq!(parsed("   "), Err(AddressError::Empty));
        assert_eq!(parsed("ann"), Err(AddressError::NotOneAt));
        assert_eq!(parsed("a@b@c.org"), Err(AddressError::NotOneAt));
        assert_eq!(parsed("@example.org"), Err(AddressError::BadLocalPart));
        assert_eq!(parsed("an n@example.org"), Err(AddressError::BadLocalPart));
        assert_eq!(parsed("ann@localhost"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@example..org"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@-example.org"), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@example.org."), Err(AddressError::BadDomain));
        assert_eq!(parsed("ann@exa_mple.org"), Err(AddressError::BadDomain));
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert_eq!(parsed(&long_local), Err(AddressError::BadLocalPart));
        let long = format!("a@{}.org", "b.".repeat(130));
        assert_eq!(parsed(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn never_prints_itself() {
        let address = Address::parse("secret@example.org").unwrap();
        assert!(!format!("{address:?}").contains("secret"));
    }
}
