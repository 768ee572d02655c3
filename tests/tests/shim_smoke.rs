//! The shim starts, answers, and verifies a key issued in SQL.

use apikey_tests::shim::Shim;
use apikey_tests::*;

#[test]
fn shim_verifies_a_key_issued_in_sql() {
    let shim = Shim::start();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let ok = shim.get_as(&key.token, "/v1/verify?scope=orders:read");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-apikey-key-id"), Some(key.key_id.as_str()));
    let missing = shim.get("/v1/verify");
    assert_eq!(missing.status, 401);
    assert_eq!(missing.reason(), "missing_key");
}
