//! The reset mail queue (issue 13) at the library level: a reset and its
//! mail exist together or not at all, the mail dies with its reset, a
//! refusal queues nothing, failures retry or drop, and a running courier
//! delivers every mail once.

use std::collections::HashMap;

use credstore::mail::{Courier, CourierSettings};
use credstore::{Lang, MailFate, MailRequest, MailRetry, RecordingMailer};

use super::*;

fn mail_request(lang: Lang) -> MailRequest {
    MailRequest {
        lang,
        shop: "acme12aa".into(),
    }
}

fn queue(store: &Store, email: &str) -> Result<credstore::Reset, Error> {
    store.request_reset_by_mail(email, ResetDetails::default(), &mail_request(Lang::En))
}

fn queued(store: &Store) -> u64 {
    store.mail_queue_summary().unwrap().queued
}

on_every_backend! {
    fn a_queued_mail_carries_its_reset_token_and_the_stored_address(backend) {
    let (store, _clock) = store(backend);
    customer(&store, "Jane.Roe@Example.com");
    let reset = queue(&store, "  jane.roe@EXAMPLE.com").unwrap();
    let listed = store.mail_queue(10).unwrap();
    assert_eq!(listed.len(), 1);
    let m = &listed[0];
    assert_eq!(m.reset_id, reset.id);
    assert_eq!(m.to, "Jane.Roe@Example.com", "the stored spelling");
    assert_eq!(
        (m.lang, m.shop.as_str(), m.attempts),
        (Lang::En, "acme12aa", 0)
    );
    assert_eq!(m.expires_at, reset.expires_at);
    assert!(
        !format!("{listed:?}").contains("token"),
        "listing shows no token"
    );
    // The largest shop key fits.
    customer(&store, "max@example.com");
    let max = MailRequest {
        lang: Lang::En,
        shop: "s".repeat(credstore::MAX_MAIL_SHOP_BYTES),
    };
    store
        .request_reset_by_mail("max@example.com", ResetDetails::default(), &max)
        .unwrap();
    let mut due = store.mail_due(10).unwrap();
    assert_eq!(due.mails.len(), 2);
    due.mails.retain(|m| m.entry.reset_id == reset.id);
    // The unsealed token is the reset's: it checks out.
    let valid = store.check_reset_token(&due.mails[0].token).unwrap();
    assert_eq!(valid.email, "Jane.Roe@Example.com");
    assert!(!format!("{:?}", due.mails[0]).contains(due.mails[0].token.expose_secret()));
    assert_sound(&store);
}
}

on_every_backend! {
    fn a_refused_or_failed_request_queues_nothing(backend) {
    let (store, _clock) = store(backend);
    customer(&store, "jane@example.com");
    let before = events(&store).len();
    // Unknown: one refused event (the same commit as an issue), no mail.
    assert!(matches!(
        queue(&store, "ghost@example.com"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(events(&store).len(), before + 1);
    assert_eq!(queued(&store), 0);
    // A bad shop key is refused before anything is written.
    let bad = MailRequest {
        lang: Lang::Es,
        shop: "a\nb".into(),
    };
    let r = store.request_reset_by_mail("jane@example.com", ResetDetails::default(), &bad);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    // So is a shop key one byte longer than the largest.
    let long = MailRequest {
        lang: Lang::En,
        shop: "s".repeat(credstore::MAX_MAIL_SHOP_BYTES + 1),
    };
    let r = store.request_reset_by_mail("jane@example.com", ResetDetails::default(), &long);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    assert_eq!(events(&store).len(), before + 1);
    // Throttled: the first is queued, the second nothing.
    queue(&store, "jane@example.com").unwrap();
    assert!(matches!(
        queue(&store, "jane@example.com"),
        Err(Error::Throttled)
    ));
    assert_eq!(queued(&store), 1);

    // A failure inside the issuing transaction: neither reset nor mail.
    let clock = ManualClock::new(T0);
    let store = backend.open(&secret(),
        config(&clock).with_fail_point(FailPoint::new(|n| n == "mail:enqueue")),
    );
    let (c, _) = customer(&store, "jane@example.com");
    assert!(queue(&store, "jane@example.com").unwrap_err().is_fault());
    assert_eq!(queued(&store), 0);
    assert!(
        store
            .request_reset("jane@example.com", ResetDetails::default())
            .is_ok(),
        "not throttled: nothing was issued"
    );
    assert_eq!(
        store.customer(c.box_id).unwrap().credential_version,
        c.credential_version
    );
}
}

on_every_backend! {
    fn a_queued_mail_dies_with_its_reset(backend) {
    let (store, clock) = store(backend);
    let (c, _) = customer(&store, "jane@example.com");
    // A password change kills the outstanding reset and its mail.
    queue(&store, "jane@example.com").unwrap();
    assert_eq!(queued(&store), 1);
    let version = store.customer(c.box_id).unwrap().credential_version;
    store
        .change_password(c.box_id, &pw("brand-new-pass-1"), version)
        .unwrap();
    assert_eq!(queued(&store), 0);
    assert_sound(&store);
    // Revoked: gone.
    clock.advance(Duration::from_secs(61));
    let r = queue(&store, "jane@example.com").unwrap();
    store.revoke_reset(&r.id).unwrap();
    assert_eq!(queued(&store), 0);
    // Used (the token came some other way): gone.
    clock.advance(Duration::from_secs(61));
    queue(&store, "jane@example.com").unwrap();
    let token = store.mail_due(1).unwrap().mails.remove(0).token;
    store
        .reset_password(&token, None, &pw("another-pass-2"))
        .unwrap();
    assert_eq!(queued(&store), 0);
    // Expired before delivery: dropped with an event when next read.
    clock.advance(Duration::from_secs(61));
    queue(&store, "jane@example.com").unwrap();
    clock.advance(TTL);
    assert!(store.mail_due(10).unwrap().mails.is_empty());
    assert_eq!(queued(&store), 0);
    assert_eq!(events(&store).last().unwrap().kind, EventKind::MailExpired);
    // Purged with its expired reset (never read by a courier).
    queue(&store, "jane@example.com").unwrap();
    clock.advance(TTL);
    assert!(store.purge_resets().unwrap() >= 1);
    assert_eq!(queued(&store), 0);
    assert_sound(&store);
}
}

on_every_backend! {
    fn failures_retry_until_expiry_or_bounce_and_revoke(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    let r = queue(&store, "jane@example.com").unwrap();
    let later = T0.plus(Duration::from_secs(30));
    assert_eq!(
        store
            .mail_failed(&r.id, "421 busy\r\n", MailRetry::At(later))
            .unwrap(),
        MailFate::Retry(later)
    );
    let m = &store.mail_queue(1).unwrap()[0];
    assert_eq!((m.attempts, m.next_attempt_at), (1, later));
    assert_eq!(m.last_error.as_deref(), Some("421 busy  "));
    assert!(store.mail_due(10).unwrap().mails.is_empty(), "not due yet");
    assert_eq!(store.mail_due(10).unwrap().next_due, Some(later));
    clock.advance(Duration::from_secs(30));
    assert_eq!(store.mail_due(10).unwrap().mails.len(), 1);
    // A retry that would come after the token dies: dropped as expired.
    let fate = store
        .mail_failed(&r.id, "421 busy", MailRetry::At(r.expires_at))
        .unwrap();
    assert_eq!(fate, MailFate::Expired);
    assert_eq!(queued(&store), 0);
    assert!(!store.mail_delivered(&r.id).unwrap(), "gone");

    // Permanent: dropped, the reset revoked, so the customer may ask again.
    clock.advance(Duration::from_secs(61));
    let r = queue(&store, "jane@example.com").unwrap();
    assert_eq!(
        store
            .mail_failed(&r.id, "550 no such user", MailRetry::Never)
            .unwrap(),
        MailFate::Bounced
    );
    assert!(matches!(
        store.reset(&r.id),
        Err(Error::NotFound(Entity::Reset))
    ));
    assert_eq!(events(&store).last().unwrap().kind, EventKind::MailBounced);
    assert!(queue(&store, "jane@example.com").is_ok(), "not throttled");
    assert_sound(&store);
}
}

on_every_backend! {
    fn a_running_courier_delivers_every_mail_once(backend) {
    const N: usize = 60;
    let (store, _clock) = store(backend);
    for i in 0..N {
        customer(&store, &format!("c{i}@example.com"));
    }
    let mailer = RecordingMailer::new();
    let courier = Courier::new(
        store.clone(),
        mailer.clone(),
        CourierSettings::new("https://shop.example").with_concurrency(4),
    )
    .spawn()
    .unwrap();
    let mut ids = HashMap::new();
    for i in 0..N {
        let r = queue(&store, &format!("c{i}@example.com")).unwrap();
        ids.insert(r.id, format!("c{i}@example.com"));
    }
    let t = std::time::Instant::now();
    while mailer.count() < N {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} of {N}",
            mailer.count()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(courier.stop(Duration::from_secs(5)));
    let mails = mailer.mails();
    assert_eq!(mails.len(), N, "none twice");
    for m in &mails {
        assert_eq!(ids.get(m.reset_id()).map(String::as_str), Some(m.to()));
        assert_eq!(m.lang(), Lang::En);
        assert!(m.link_exposing_token().ends_with(&format!(
            "/api/v1/acme12aa/customers/reset-password/{}",
            m.token().expose_secret()
        )));
        assert!(store.check_reset_token(m.token()).is_ok());
    }
    assert_eq!(queued(&store), 0);
    let delivered = events(&store)
        .iter()
        .filter(|e| e.kind == EventKind::MailDelivered)
        .count();
    assert_eq!(delivered, N);
    assert_sound(&store);
}
}

on_every_backend! {
    /// A stopped courier sends nothing more; what is queued waits for the next.
    fn a_stopped_courier_leaves_the_queue_for_the_next(backend) {
    let (store, _clock) = store(backend);
    customer(&store, "jane@example.com");
    let mailer = RecordingMailer::new();
    let courier = Courier::new(
        store.clone(),
        mailer.clone(),
        CourierSettings::new("http://x"),
    )
    .spawn()
    .unwrap();
    assert!(courier.stop(Duration::from_secs(5)));
    queue(&store, "jane@example.com").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(mailer.count(), 0);
    assert_eq!(queued(&store), 1);
    let again = Courier::new(
        store.clone(),
        mailer.clone(),
        CourierSettings::new("http://x"),
    );
    assert_eq!(again.deliver_due().unwrap().delivered, 1);
    assert_eq!((mailer.count(), queued(&store)), (1, 0));
}
}

/// Two instances on one PostgreSQL database, each with its courier polling
/// the shared queue every few milliseconds: each mail is sent once (a
/// courier claims a mail before sending it; without the claim both read
/// the same mails as due and send them). Queued through both instances.
#[test]
fn couriers_of_two_instances_on_one_database_send_each_mail_once() {
    if !Backend::Postgres.available() {
        return;
    }
    const N: usize = 40;
    let (first, clock) = store(Backend::Postgres);
    let second = Store::open_postgres(first.postgres_url().unwrap(), &secret(), config(&clock))
        .expect("a second instance on the same schema");
    for i in 0..N {
        customer(&first, &format!("c{i}@example.com"));
    }
    let settings = CourierSettings::new("https://shop.example")
        .with_concurrency(4)
        .with_idle_poll(Duration::from_millis(5));
    let mailers = [RecordingMailer::new(), RecordingMailer::new()];
    let couriers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .zip(&mailers)
        .map(|(s, m)| {
            Courier::new(s, m.clone(), settings.clone())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = HashMap::new();
    for i in 0..N {
        let via = if i % 2 == 0 { &*first } else { &second };
        let r = queue(via, &format!("c{i}@example.com")).unwrap();
        ids.insert(r.id, format!("c{i}@example.com"));
    }
    let sent = || mailers.iter().map(RecordingMailer::count).sum::<usize>();
    let t = std::time::Instant::now();
    while sent() < N || queued(&first) > 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "{} of {N}", sent());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Time for a second send of any mail, had one been read twice.
    std::thread::sleep(Duration::from_millis(300));
    for c in couriers {
        assert!(c.stop(Duration::from_secs(5)));
    }
    let mails: Vec<_> = mailers.iter().flat_map(RecordingMailer::mails).collect();
    let mut seen = std::collections::HashSet::new();
    for m in &mails {
        assert!(
            seen.insert(m.reset_id().to_owned()),
            "{} sent twice",
            m.reset_id()
        );
        assert_eq!(ids.get(m.reset_id()).map(String::as_str), Some(m.to()));
    }
    assert_eq!(mails.len(), N);
    let delivered = events(&first)
        .iter()
        .filter(|e| e.kind == EventKind::MailDelivered)
        .count();
    assert_eq!(delivered, N);
}
