//! The integrity check must find each kind of damage: every index is broken
//! in turn (an entry removed, an entry pointing at nothing, a record that
//! does not decode) on an otherwise sound store, and the report must name
//! exactly that problem. A checker that only decoded records would fail here.

use super::super::Engine;
use super::super::records::{CustomerRecord, ResetRecord};
use super::super::schema::TreeId;
use super::super::schema::{CUSTOMERS, CustomerResetKey, DueKey, ExpiryKey, RESETS};
use crate::model::{NewCustomer, Password, ResetDetails};
use crate::{Config, Store, StoreSecret};

struct Fixture {
    store: Store,
    box_id: u64,
    /// An outstanding reset, and a used one.
    live: ResetRecord,
    used: ResetRecord,
}

/// A store holding one of everything: a customer with an outstanding and a
/// used reset, an app with a shop, an event log, a nonce, a login guard.
fn populated() -> Fixture {
    let store = Store::temporary(&StoreSecret::from_bytes([3; 32]), Config::for_tests()).unwrap();
    let pw = |s: &str| Password::new(s).unwrap();
    let (c, _) = store
        .register(NewCustomer::new("a@b.co", "A", "B", pw("password-1")))
        .unwrap();
    store.create_app(396, "app", Some("shop1")).unwrap();
    let used = store
        .request_reset("a@b.co", ResetDetails::default())
        .unwrap();
    store
        .reset_password(&used.token, None, &pw("password-2"))
        .unwrap();
    // The used reset is no longer outstanding: no throttle.
    let live = store
        .request_reset("a@b.co", ResetDetails::default())
        .unwrap();
    let _ = store.login("nobody@b.co", &pw("password-x"));
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    let reset = |id: &str| engine(&store).get(&RESETS, id).unwrap().unwrap();
    Fixture {
        box_id: c.box_id,
        live: reset(&live.reset.id),
        used: reset(&used.reset.id),
        store,
    }
}

fn engine(store: &Store) -> &Engine {
    store.engine()
}

/// Breaks the fixture with `damage` (writes of bytes to the backend, under
/// the typed layer), and returns the problems the check reports.
fn problems_after(damage: impl Fn(&Fixture, &Engine)) -> Vec<String> {
    let f = populated();
    damage(&f, engine(&f.store));
    f.store.check_integrity().unwrap().problems
}

fn remove(e: &Engine, tree: TreeId, key: &[u8]) {
    assert!(
        e.get_raw(tree, key).unwrap().is_some(),
        "{tree:?} had no such key"
    );
    e.backend().transact(&|tx| tx.delete(tree, key)).unwrap();
}

fn put(e: &Engine, tree: TreeId, key: &[u8], value: &[u8]) {
    e.backend()
        .transact(&|tx| tx.put(tree, key, value.to_vec()))
        .unwrap();
}

fn first_row(e: &Engine, tree: TreeId) -> (Vec<u8>, Vec<u8>) {
    e.backend().scan(tree, &[], 1).unwrap().remove(0)
}

fn expect_one(problems: Vec<String>, needle: &str) {
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(needle),
        "{problems:?} lacks {needle:?}"
    );
}

#[test]
fn a_customer_missing_from_the_email_index() {
    // The customer is then unindexed, and nothing else is wrong.
    let p = problems_after(|_, e| remove(e, TreeId::Emails, b"a@b.co"));
    expect_one(p, "is not in the email index");
}

#[test]
fn an_email_index_entry_pointing_at_nothing() {
    let p = problems_after(|_, e| put(e, TreeId::Emails, b"x@b.co", &99u64.to_be_bytes()));
    expect_one(p, "email index entry");
}

#[test]
fn an_app_missing_from_the_shop_index_and_a_dangling_shop() {
    let p = problems_after(|_, e| remove(e, TreeId::Shops, b"shop1"));
    expect_one(p, "is not in the shop index");
    let p = problems_after(|_, e| put(e, TreeId::Shops, b"shop2", &396u32.to_be_bytes()));
    expect_one(p, "shop index entry");
}

#[test]
fn a_live_reset_missing_from_the_token_index() {
    let p = problems_after(|f, e| remove(e, TreeId::ResetTokens, &f.live.token_digest));
    expect_one(p, "is not in the token index");
}

#[test]
fn a_used_reset_still_in_the_token_index() {
    let p = problems_after(|f, e| {
        // The live one's entry, copied under the used one's digest.
        let v = e
            .get_raw(TreeId::ResetTokens, &f.live.token_digest)
            .unwrap()
            .unwrap();
        put(e, TreeId::ResetTokens, &f.used.token_digest, &v);
    });
    assert!(
        p.iter().any(|p| p.contains("still in the token index")),
        "{p:?}"
    );
}

#[test]
fn a_token_index_entry_pointing_at_nothing() {
    let p = problems_after(|f, e| {
        let v = e
            .get_raw(TreeId::ResetTokens, &f.live.token_digest)
            .unwrap()
            .unwrap();
        put(e, TreeId::ResetTokens, &[7; 32], &v);
    });
    expect_one(p, "token index entry");
}

#[test]
fn resets_missing_from_the_expiry_and_customer_indexes() {
    let p = problems_after(|f, e| remove(e, TreeId::ResetExpiry, &ExpiryKey::of(&f.live)));
    expect_one(p, "is not in the expiry index");
    let p = problems_after(|f, e| remove(e, TreeId::ResetExpiry, &ExpiryKey::of(&f.used)));
    expect_one(p, "is not in the expiry index");
    let p =
        problems_after(|f, e| remove(e, TreeId::ResetsByCustomer, &CustomerResetKey::of(&f.live)));
    expect_one(p, "is not in the customer index");
}

#[test]
fn expiry_and_customer_index_entries_pointing_at_nothing() {
    let p = problems_after(|_, e| {
        put(
            e,
            TreeId::ResetExpiry,
            b"\x80\0\0\0\0\0\0\x01AAAAAAAAAA",
            b"",
        )
    });
    expect_one(p, "expiry index entry");
    let p = problems_after(|f, e| {
        let mut k = f.box_id.to_be_bytes().to_vec();
        k.extend_from_slice(b"AAAAAAAAAA");
        put(e, TreeId::ResetsByCustomer, &k, b"");
    });
    expect_one(p, "customer index entry");
}

#[test]
fn a_reset_list_that_disagrees_with_the_resets() {
    // The live reset unlisted by its customer; then a listed id of no reset.
    let edit = |f: &Fixture, e: &Engine, change: &dyn Fn(&mut CustomerRecord)| {
        let key = f.box_id.to_be_bytes();
        let mut c: CustomerRecord = e.get(&CUSTOMERS, f.box_id).unwrap().unwrap();
        change(&mut c);
        put(
            e,
            TreeId::Customers,
            &key,
            &super::super::encoding::encode(&c),
        );
    };
    let p = problems_after(|f, e| edit(f, e, &|c| c.resets.clear()));
    expect_one(p, "is not listed by customer");
    let p = problems_after(|f, e| edit(f, e, &|c| c.resets.push("BBBBBBBBBB".into())));
    expect_one(p, "which is no unused reset of theirs");
    let used = populated().used.id;
    let p = problems_after(move |f, e| {
        let used = used.clone();
        edit(f, e, &move |c| c.resets.push(used.clone()));
    });
    assert!(!p.is_empty(), "a used reset listed must be reported");
}

#[test]
fn records_that_do_not_decode_are_named() {
    for tree in [
        TreeId::Customers,
        TreeId::Apps,
        TreeId::Events,
        TreeId::Resets,
    ] {
        let p = problems_after(|f, e| {
            let key = first_row(e, tree).0;
            let _ = f;
            put(e, tree, &key, b"\x01garbage");
        });
        assert!(
            p.iter()
                .any(|p| p.contains("corrupt record") && p.contains(tree.name())),
            "{tree:?}: {p:?}"
        );
    }
}

#[test]
fn malformed_nonce_and_login_guard_keys() {
    let p = problems_after(|_, e| {
        put(
            e,
            TreeId::Nonces,
            b"short",
            &super::super::encoding::encode(&crate::Timestamp(0)),
        )
    });
    expect_one(p, "nonce");
    let p = problems_after(|_, e| {
        let (k, v) = first_row(e, TreeId::LoginGuards);
        put(e, TreeId::LoginGuards, &k[..5], &v);
    });
    expect_one(p, "login guard");
}

/// The fixture with a queued reset mail for a second customer.
fn with_queued_mail() -> (Fixture, crate::store::records::MailRecord) {
    let f = populated();
    let pw = Password::new("password-1").unwrap();
    f.store
        .register(NewCustomer::new("m@b.co", "M", "B", pw))
        .unwrap();
    let mail = crate::model::MailRequest {
        lang: crate::model::Lang::En,
        shop: "shop1".into(),
    };
    let reset = f
        .store
        .request_reset_by_mail("m@b.co", ResetDetails::default(), &mail)
        .unwrap();
    let rec = engine(&f.store)
        .get(&super::super::schema::MAIL_QUEUE, &reset.id)
        .unwrap()
        .unwrap();
    assert!(f.store.check_integrity().unwrap().is_sound());
    (f, rec)
}

#[test]
fn a_queued_mail_missing_from_the_due_index_is_found_and_indexed_at_open() {
    let (f, rec) = with_queued_mail();
    let e = engine(&f.store);
    remove(e, TreeId::MailDue, &DueKey::of(&rec));
    expect_one(
        f.store.check_integrity().unwrap().problems,
        "has no due-index entry",
    );
    // What opening a store written before the index does.
    f.store.index_queued_mail().unwrap();
    assert!(f.store.check_integrity().unwrap().is_sound());
    assert_eq!(f.store.mail_due(10).unwrap().mails.len(), 1);
}

#[test]
fn a_due_index_entry_pointing_at_nothing() {
    let (f, rec) = with_queued_mail();
    let e = engine(&f.store);
    let mut stale = rec.clone();
    stale.next_attempt_at = crate::Timestamp(rec.next_attempt_at.0 + 1);
    put(e, TreeId::MailDue, &DueKey::of(&stale), &[]);
    expect_one(
        f.store.check_integrity().unwrap().problems,
        "points at no matching queued mail",
    );
    // A courier passes over it: the mail is read once, under its own key.
    assert_eq!(f.store.mail_due(10).unwrap().mails.len(), 1);
}

/// The purge reads the expiry index outside its transactions and re-checks
/// each reset inside: an entry that no longer matches its reset (here a
/// stale one, dated long ago, beside the live reset's own) never purges a
/// reset that is still live.
#[test]
fn a_stale_expiry_entry_never_purges_a_live_reset() {
    let f = populated();
    let e = engine(&f.store);
    let mut stale = f.live.clone();
    stale.expires_at = crate::Timestamp(1);
    put(e, TreeId::ResetExpiry, &ExpiryKey::of(&stale), b"");
    // The used reset goes; the live one stays, and its token still works.
    assert_eq!(f.store.purge_resets().unwrap(), 1);
    assert!(e.get(&RESETS, &f.live.id).unwrap().is_some());
    assert!(e.get(&RESETS, &f.used.id).unwrap().is_none());
    assert_eq!(f.store.reset(&f.live.id).unwrap().id, f.live.id);
}
