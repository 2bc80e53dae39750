//! Where clients are, coarsely: the country and continent of an address, from an optional
//! MaxMind country database (`geoip_db_path`). Looked up once, at connect, before the address
//! is forgotten (`client_identity`); only the two codes survive, and only as counts of sessions
//! started (`ephemera_sessions_started_by_country_total`).

use std::net::IpAddr;
use std::path::Path;

use ephemera_actors::client_key::Region;
use serde::Deserialize;

/// A MaxMind GeoIP2 or GeoLite2 country database, read into memory at start.
pub struct GeoDb(maxminddb::Reader<Vec<u8>>);

/// The parts of a country record we read; the rest (names in many languages) is skipped, so
/// a lookup allocates nothing.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentCode<'a> {
    code: Option<&'a str>,
}

impl GeoDb {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|error| anyhow::anyhow!("geoip_db_path {}: {error}", path.display()))?;
        Ok(Self(reader))
    }

    /// The region of `ip`; unknown when the database does not have it.
    pub fn region_of(&self, ip: IpAddr) -> Region {
        match self.0.lookup::<CountryRecord<'_>>(ip) {
            Ok(Some(record)) => Region::new(
                record.country.and_then(|c| c.iso_code),
                record.continent.and_then(|c| c.code),
            ),
            _ => Region::UNKNOWN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_database() -> GeoDb {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/geoip/GeoLite2-Country-Test.mmdb");
        GeoDb::open(&path).expect("MaxMind's test database opens")
    }

    #[test]
    fn addresses_in_the_test_database_have_their_country_and_continent() {
        let db = test_database();
        for (ip, country, continent) in [
            ("81.2.69.142", "GB", "EU"),
            ("89.160.20.112", "SE", "EU"),
            ("216.160.83.56", "US", "NA"),
        ] {
            let region = db.region_of(ip.parse().unwrap());
            assert_eq!(
                (region.country(), region.continent()),
                (country, continent),
                "{ip}"
            );
        }
    }

    #[test]
    fn an_address_the_database_does_not_have_is_unknown() {
        let db = test_database();
        for ip in ["127.0.0.1", "10.1.2.3", "::1"] {
            assert_eq!(db.region_of(ip.parse().unwrap()), Region::UNKNOWN, "{ip}");
        }
        assert_eq!(Region::UNKNOWN.country(), "unknown");
    }

    #[test]
    fn a_missing_or_broken_file_is_a_clear_error() {
        let error = GeoDb::open(Path::new("/nonexistent/country.mmdb"))
            .err()
            .unwrap();
        assert!(error.to_string().contains("geoip_db_path"), "{error}");
        let not_a_database = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(GeoDb::open(&not_a_database).is_err());
    }
}
