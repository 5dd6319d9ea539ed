//! Queue order: every sort key with fifo and lifo, multi-key orders, the exact dequeue
//! order of a mix, and Tuxedo's rule that a lower-priority message goes out after every
//! ten higher ones.

use crate::app::{App, qlist, space_with, tuxedo_time};
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, TimeSpec};

/// One message of a mix: its body, priority, availability and expiration (absolute
/// seconds, in the past for availability so every message is ready).
#[derive(Clone, Copy)]
struct M {
    body: &'static str,
    prio: u8,
    time: Option<u64>,
    exp: Option<u64>,
}

const fn m(body: &'static str, prio: u8, time: Option<u64>, exp: Option<u64>) -> M {
    M { body, prio, time, exp }
}

/// Queue space QS with a queue named after each order.
fn queues(orders: &[(&str, &str)]) -> crate::support::Env {
    let defs: Vec<String> =
        orders.iter().map(|(name, order)| format!("{name} {order} none 0 0 100% 0% ''")).collect();
    let defs: Vec<&str> = defs.iter().map(String::as_str).collect();
    space_with("", "40000 400 16 4 16 1000 '' n 16", &defs)
}

/// Enqueues the mix on `queue` and returns the bodies in dequeue order.
fn order_of(app: &mut App, queue: &str, mix: &[M], base: u64) -> Vec<String> {
    for x in mix {
        let ctl = EnqueueCtl {
            priority: Some(x.prio),
            available: x.time.map(TimeSpec::Absolute),
            expiration: Some(x.exp.map_or(Expiry::Never, |e| Expiry::Absolute(base + e))),
            ..EnqueueCtl::default()
        };
        app.put_with(queue, x.body, ctl);
    }
    app.drain(queue)
}

/// Single keys with fifo and lifo tie-breaks: fifo, lifo, priority (alone it is fifo),
/// priority,lifo, time, time,lifo, expiration (no expiration last), expiration,lifo.
#[test]
fn single_keys() {
    let orders = [
        ("FIFO", "fifo"),
        ("LIFO", "lifo"),
        ("PRIO", "priority"),
        ("PRIOL", "priority,lifo"),
        ("TIME", "time"),
        ("TIMEL", "time,lifo"),
        ("EXP", "expiration"),
        ("EXPL", "expiration,lifo"),
    ];
    let env = queues(&orders);
    let mut app = App::connect(&env);
    let base = crate::app::now();
    // Priorities, availability times (all in the past) and expirations (from base).
    let mix = [
        m("a", 50, Some(2000), Some(3000)),
        m("b", 90, Some(3000), None),
        m("c", 10, Some(1000), Some(1000)),
        m("d", 90, Some(2000), Some(2000)),
        m("e", 50, Some(1000), None),
        m("f", 10, Some(2000), Some(1000)),
    ];
    let expect = [
        ("FIFO", "a b c d e f"),
        ("LIFO", "f e d c b a"),
        ("PRIO", "b d a e c f"),
        ("PRIOL", "d b e a f c"),
        ("TIME", "c e a d f b"),
        ("TIMEL", "e c f d a b"),
        ("EXP", "c f d a b e"),
        ("EXPL", "f c d a e b"),
    ];
    for (queue, want) in expect {
        let got = order_of(&mut app, queue, &mix, base);
        assert_eq!(got.join(" "), want, "order of queue {queue}");
    }
}

/// Multi-key orders: the first key decides, the next breaks its ties, fifo/lifo last.
#[test]
fn multi_key_orders() {
    let orders = [
        ("PTL", "priority,time,lifo"),
        ("TPF", "time,priority,fifo"),
        ("EPF", "expiration,priority,fifo"),
        ("PE", "priority,expiration"),
        ("TEP", "time,expiration,priority,lifo"),
    ];
    let env = queues(&orders);
    let mut app = App::connect(&env);
    let base = crate::app::now();
    let mix = [
        m("a", 50, Some(2000), Some(100)),
        m("b", 90, Some(3000), None),
        m("c", 90, Some(1000), Some(100)),
        m("d", 50, Some(2000), None),
        m("e", 50, Some(1000), Some(50)),
        m("f", 90, Some(1000), Some(100)),
        m("g", 10, Some(500), None),
        m("h", 50, Some(2000), Some(100)),
    ];
    let expect = [
        // 90: c f (t1000, lifo: f c), b (t3000); 50: e (t1000), then t2000 lifo: h d a; 10: g.
        ("PTL", "f c b e h d a g"),
        // t500 g; t1000: 90 c f (fifo), 50 e; t2000: 50 a d h; t3000 b.
        ("TPF", "g c f e a d h b"),
        // exp 50: e; exp 100: 90 c f, 50 a h; none: 90 b, 50 d, 10 g.
        ("EPF", "e c f a h b d g"),
        // 90: exp 100 c f, none b; 50: exp 50 e, exp 100 a h, none d; 10: g.
        ("PE", "c f b e a h d g"),
        // t500 g; t1000: exp 50 e, exp 100: 90 f c (lifo); t2000: exp 100 50 h a, none d; b.
        ("TEP", "g e f c h a d b"),
    ];
    for (queue, want) in expect {
        let got = order_of(&mut app, queue, &mix, base);
        assert_eq!(got.join(" "), want, "order of queue {queue}");
    }
}

/// The same through qmadmin: `qenqueue -p -t -e` on a `priority,time,lifo` queue, `qlist`
/// shows the queue order and `qdequeue -B` takes the messages in it.
#[test]
fn order_through_qmadmin() {
    let env = queues(&[("PTL", "priority,time,lifo")]);
    let t = |s: u64| tuxedo_time(s);
    let base = crate::app::now() - 100;
    env.c(&format!(
        "qopen QS; qenqueue -p 20 -t {} PTL a; qenqueue -p 80 -t {} PTL b; qenqueue -p 80 -t {} PTL c; qenqueue -p 20 -t {} PTL d; qenqueue -p 20 -t {} PTL e",
        t(base + 10),
        t(base + 20),
        t(base + 10),
        t(base + 10),
        t(base)
    ))
    .ok();
    let prios: Vec<u8> = qlist(&env, "PTL").iter().map(|m| m.priority).collect();
    assert_eq!(prios, [80, 80, 20, 20, 20]);
    let run = env.c("qopen QS; qdequeue -B PTL; qdequeue -B PTL; qdequeue -B PTL; qdequeue -B PTL; qdequeue -B PTL");
    run.ok();
    // 80: c (t10) then b (t20); 20: e (t0), then d and a (t10, lifo).
    assert_eq!(run.stdout, "cbeda");
}

/// On a queue ordered by priority first, a lower-priority message goes out after every
/// ten higher ones: with 25 high and 2 low, the low ones are the 11th and 22nd dequeues;
/// with three levels the next level down goes first. Queues ordered otherwise are strict.
#[test]
fn ten_message_starvation_rule() {
    let env = queues(&[("P", "priority"), ("P3", "priority,lifo"), ("T", "time,priority")]);
    let mut app = App::connect(&env);
    let prio = |p: u8| EnqueueCtl { priority: Some(p), ..EnqueueCtl::default() };
    app.put_with("P", "low1", prio(10));
    for i in 0..25 {
        app.put_with("P", &format!("high{i}"), prio(90));
    }
    app.put_with("P", "low2", prio(10));
    let got = app.drain("P");
    let lows: Vec<usize> =
        got.iter().enumerate().filter(|(_, b)| b.starts_with("low")).map(|(i, _)| i + 1).collect();
    assert_eq!(lows, [11, 22], "{got:?}");
    assert_eq!(got[10], "low1");
    assert_eq!(got[21], "low2");
    let highs: Vec<&String> = got.iter().filter(|b| b.starts_with("high")).collect();
    let fifo: Vec<String> = (0..25).map(|i| format!("high{i}")).collect();
    assert_eq!(highs, fifo.iter().collect::<Vec<_>>(), "the high ones stay in order");

    // Three levels: after ten at 90, the next level (50) goes, then 90 again, then 10.
    app.put_with("P3", "ten", prio(10));
    app.put_with("P3", "fifty", prio(50));
    for i in 0..12 {
        app.put_with("P3", &format!("n{i}"), prio(90));
    }
    let got = app.drain("P3");
    let levels: Vec<&str> = got
        .iter()
        .map(|b| {
            if b.starts_with('n') {
                "90"
            } else if b == "fifty" {
                "50"
            } else {
                "10"
            }
        })
        .collect();
    let mut want = vec!["90"; 10];
    want.extend(["50", "90", "90", "10"]);
    assert_eq!(levels, want, "{got:?}");

    // Dequeues by msgid or corrid and peeks do not count toward the ten.
    app.put_with("P", "low", prio(10));
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.put_with("P", &format!("h{i}"), prio(90)));
    }
    for id in &ids[..5] {
        app.take_id("P", id).unwrap();
    }
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    for _ in 0..5 {
        app.dequeue("P", &peek).unwrap();
    }
    let got = app.drain("P");
    assert_eq!(got.iter().position(|b| b == "low"), Some(10), "{got:?}");
    assert_eq!(got.len(), 16);

    // time,priority: time decides first, so the rule does not apply: with equal times
    // the low message waits for every high one.
    let base = crate::app::now() - 100;
    app.put_with("T", "low", EnqueueCtl { available: Some(TimeSpec::Absolute(base)), ..prio(10) });
    for i in 0..12 {
        app.put_with(
            "T",
            &format!("h{i}"),
            EnqueueCtl { available: Some(TimeSpec::Absolute(base)), ..prio(90) },
        );
    }
    let got = app.drain("T");
    assert_eq!(got.last().map(String::as_str), Some("low"), "{got:?}");
    assert_eq!(got.len(), 13);
}

/// Every order qcreate accepts (each subset of priority, time and expiration in each
/// sequence, with fifo or lifo) hands out a mix with ties on every key exactly as the
/// model says: priority high first, time early first, expiration early first and none
/// last, then first-in or last-in; on priority-first queues with the ten-message rule.
#[test]
fn every_combination_matches_the_model() {
    let keys = ["priority", "time", "expiration"];
    let mut orders: Vec<Vec<&str>> = vec![vec![]];
    for a in keys {
        orders.push(vec![a]);
        for b in keys.iter().filter(|b| **b != a) {
            orders.push(vec![a, b]);
            for c in keys.iter().filter(|c| **c != a && **c != *b) {
                orders.push(vec![a, b, c]);
            }
        }
    }
    assert_eq!(orders.len(), 16);
    let mut specs = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        for tie in ["fifo", "lifo"] {
            let mut words = o.clone();
            words.push(tie);
            specs.push((format!("O{i}{tie}"), words.join(",")));
        }
    }
    let defs: Vec<String> =
        specs.iter().map(|(name, order)| format!("{name} {order} none 0 0 100% 0% ''")).collect();
    let defs: Vec<&str> = defs.iter().map(String::as_str).collect();
    let env = space_with("-n 16B", "40000 400 40 4 16 1000 '' n 16", &defs);
    let mut app = App::connect(&env);
    let base = crate::app::now();
    // Every combination of 3 priorities, 2 times and 3 expirations, in a scrambled order.
    let mut mix = Vec::new();
    for p in [10u8, 50, 90] {
        for t in [1000u64, 2000] {
            for e in [None, Some(100u64), Some(200)] {
                mix.push((p, t, e));
            }
        }
    }
    let mix: Vec<(u8, u64, Option<u64>)> =
        (0..mix.len()).map(|i| mix[(i * 7) % mix.len()]).collect();
    for ((name, order), words) in specs.iter().zip(specs.iter().map(|(_, o)| o.split(','))) {
        for (n, &(p, t, e)) in mix.iter().enumerate() {
            let ctl = EnqueueCtl {
                priority: Some(p),
                available: Some(TimeSpec::Absolute(t)),
                expiration: Some(e.map_or(Expiry::Never, |e| Expiry::Absolute(base + e))),
                delivery: Some(qm_common::message::Qos::NonPersistent),
                ..EnqueueCtl::default()
            };
            app.put_with(name, &n.to_string(), ctl);
        }
        let mut model: Vec<usize> = (0..mix.len()).collect();
        let words: Vec<&str> = words.collect();
        model.sort_by(|&x, &y| {
            let (a, b) = (mix[x], mix[y]);
            let mut ord = std::cmp::Ordering::Equal;
            for w in &words {
                ord = ord.then(match *w {
                    "priority" => b.0.cmp(&a.0),
                    "time" => a.1.cmp(&b.1),
                    "expiration" => a.2.unwrap_or(u64::MAX).cmp(&b.2.unwrap_or(u64::MAX)),
                    "fifo" => x.cmp(&y),
                    _ => y.cmp(&x),
                });
            }
            ord
        });
        let got: Vec<usize> = app.drain(name).iter().map(|b| b.parse().unwrap()).collect();
        // On priority-first queues the ten-message rule applies: after six at 90 and four
        // at 50, the first message at 10 has waited through ten and goes next.
        let model = if words[0] == "priority" { starved(&model, &mix) } else { model };
        assert_eq!(got, model, "queue {name} ({order})");
    }
}

/// The model order with the ten-message rule applied: after ten dequeues in a row from
/// the top priority level while a lower level waits, the first message of the next level
/// down goes.
fn starved(model: &[usize], mix: &[(u8, u64, Option<u64>)]) -> Vec<usize> {
    let mut left: Vec<usize> = model.to_vec();
    let mut out = Vec::new();
    let mut streak = 0;
    while !left.is_empty() {
        let top = mix[left[0]].0;
        let pick =
            if streak >= 10 { left.iter().position(|&m| mix[m].0 < top).unwrap_or(0) } else { 0 };
        let taken = left[pick];
        let lower_waits = left.iter().any(|&m| mix[m].0 < mix[taken].0);
        streak = if lower_waits && mix[taken].0 == top { streak + 1 } else { 0 };
        out.push(taken);
        left.remove(pick);
    }
    out
}
