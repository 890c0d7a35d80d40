//! Property tests of the inventory differ on random inventory-shaped documents: applying a diff
//! to the old document gives the new one (modulo ignored paths and identity order), a document
//! has no diff with itself, and reordering identity arrays is no change.

use std::collections::BTreeMap;

use events_schema::InventoryChange;
use projections::inventory::{apply, canonical, diff, DiffRules};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Keys with the characters the path syntax escapes, so escaping is exercised too.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "b", "name", "serial", "id", "x/y", "[k]", "a=b", "~0", "", "uptime", "counters",
    ])
    .prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        Just(json!(1.5)),
        "[a-c/=~\\[\\]]{0,3}".prop_map(Value::from),
    ]
}

/// Arbitrary small JSON, where arrays sometimes have identity keys and sometimes not.
fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner.clone(), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            // An array of objects with (maybe) distinct names.
            prop::collection::vec(
                (prop::sample::select(vec!["n1", "n2", "n3", "n4"]), inner),
                0..5
            )
            .prop_map(|elements| {
                Value::Array(
                    elements
                        .into_iter()
                        .map(|(name, v)| json!({"name": name, "v": v}))
                        .collect(),
                )
            }),
        ]
    })
}

fn nic() -> impl Strategy<Value = (String, Value)> {
    (
        0..6u8,
        0..4u8,
        prop::collection::vec(0..4u8, 0..3),
        any::<u32>(),
        prop::option::of(any_json()),
    )
        .prop_map(|(n, mtu, addresses, rx, extra)| {
            let name = format!("eth{n}");
            let mut nic = json!({
                "name": name,
                "mac": format!("aa:{n:02x}"),
                "mtu": 1500 + u32::from(mtu) * 1000,
                "addresses": addresses.iter().map(|a| json!({"family": "inet", "address": format!("10.0.{n}.{a}")})).collect::<Vec<_>>(),
                "counters": {"rx_bytes": rx},
            });
            if let Some(extra) = extra {
                nic["extra"] = extra;
            }
            (name, nic)
        })
}

/// An inventory-shaped document: OS facts, NICs by name, DIMMs by serial, packages by name,
/// a scalar DNS list, CPUs without identity, and some arbitrary JSON.
fn inventory() -> impl Strategy<Value = Value> {
    (
        (prop::sample::select(vec!["Debian", "Ubuntu"]), 10..13u8, any::<u32>()),
        prop::collection::vec(nic(), 0..5),
        prop::collection::btree_map(0..8u8, 0..3u8, 0..6),
        prop::collection::btree_map(0..10u8, 0..3u8, 0..8),
        prop::collection::vec(prop::sample::select(vec!["10.0.0.53", "10.0.1.53", "1.1.1.1"]), 0..4),
        prop::collection::vec(0..3u8, 0..3),
        any_json(),
    )
        .prop_flat_map(|(os, nics, dimms, packages, dns, cpus, misc)| {
            let nics: BTreeMap<String, Value> = nics.into_iter().collect();
            let nics: Vec<Value> = nics.into_values().collect();
            let dimms: Vec<Value> = dimms
                .into_iter()
                .map(|(serial, size)| json!({"serial": format!("S{serial}"), "size_gb": 8 << size}))
                .collect();
            let packages: Vec<Value> = packages
                .into_iter()
                .map(|(name, version)| json!({"name": format!("pkg{name}"), "version": format!("1.{version}")}))
                .collect();
            (
                Just(os),
                Just(nics).prop_shuffle(),
                Just(dimms).prop_shuffle(),
                Just(packages).prop_shuffle(),
                Just(dns),
                Just(cpus),
                Just(misc),
            )
        })
        .prop_map(|((os, version, uptime), nics, dimms, packages, dns, cpus, misc)| {
            json!({
                "os": {"name": os, "version": version.to_string(), "uptime_seconds": uptime},
                "network": {"interfaces": nics, "dns": dns},
                "hardware": {"memory": dimms, "cpus": cpus.iter().map(|c| json!({"socket": c, "mhz": 2000})).collect::<Vec<_>>()},
                "packages": packages,
                "misc": misc,
            })
        })
}

/// One edit of a document at a node picked by `at` (an index into all nodes, modulo).
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Insert(String, Value),
    Reverse,
}

fn edit() -> impl Strategy<Value = (usize, Edit)> {
    (
        any::<usize>(),
        prop_oneof![
            any_json().prop_map(Edit::Replace),
            Just(Edit::Remove),
            (key(), any_json()).prop_map(|(k, v)| Edit::Insert(k, v)),
            Just(Edit::Reverse),
        ],
    )
}

fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                pointers(v, format!("{at}/{escaped}"), out);
            }
        }
        Value::Array(array) => {
            for (i, v) in array.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn edited(doc: &Value, edits: &[(usize, Edit)]) -> Value {
    let mut doc = doc.clone();
    for (at, edit) in edits {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let pointer = &all[at % all.len()];
        match edit {
            Edit::Replace(v) => *doc.pointer_mut(pointer).unwrap() = v.clone(),
            Edit::Remove => {
                if let Some((parent, last)) = pointer.rsplit_once('/') {
                    match doc.pointer_mut(parent).unwrap() {
                        Value::Object(map) => {
                            map.remove(&last.replace("~1", "/").replace("~0", "~"));
                        }
                        Value::Array(array) => {
                            array.remove(last.parse::<usize>().unwrap());
                        }
                        _ => unreachable!(),
                    }
                }
            }
            Edit::Insert(k, v) => match doc.pointer_mut(pointer).unwrap() {
                Value::Object(map) => {
                    map.insert(k.clone(), v.clone());
                }
                Value::Array(array) => array.push(v.clone()),
                other => *other = v.clone(),
            },
            Edit::Reverse => {
                if let Value::Array(array) = doc.pointer_mut(pointer).unwrap() {
                    array.reverse();
                }
            }
        }
    }
    doc
}

/// Every identity-keyed array reversed, recursively (scalar arrays too: they are sets).
fn reordered(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), reordered(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(array) => {
            let names: Vec<Option<&Value>> = array.iter().map(|e| e.get("name")).collect();
            let mut out: Vec<Value> = array.iter().map(reordered).collect();
            let identity = names.iter().all(|n| n.is_some_and(Value::is_string))
                && names
                    .iter()
                    .enumerate()
                    .all(|(i, n)| !names[..i].contains(n));
            let scalars = array.iter().all(|e| !e.is_array() && !e.is_object());
            if identity || scalars {
                out.reverse();
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

fn assert_round_trip(old: &Value, new: &Value) -> Result<(), TestCaseError> {
    let rules = DiffRules::default();
    let changes = diff(old, new, &rules);
    // The changes travel as JSON in the event: apply what a reader would decode.
    let stored = serde_json::to_string(&changes).unwrap();
    let decoded: Vec<InventoryChange> = serde_json::from_str(&stored).unwrap();
    let applied =
        apply(old, &decoded).map_err(|e| TestCaseError::fail(format!("{e}: {stored}")))?;
    prop_assert_eq!(
        canonical(&applied, &rules),
        canonical(new, &rules),
        "changes: {}",
        stored
    );
    for pair in changes.windows(2) {
        prop_assert_ne!(&pair[0].path, &pair[1].path, "one change per path");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_the_diff_of_an_edit_gives_the_edited_document(
        old in inventory(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let new = edited(&old, &edits);
        assert_round_trip(&old, &new)?;
    }

    #[test]
    fn applying_the_diff_of_two_unrelated_inventories_gives_the_second(
        old in inventory(),
        new in inventory(),
    ) {
        assert_round_trip(&old, &new)?;
    }

    #[test]
    fn applying_the_diff_of_arbitrary_json_gives_the_second(old in any_json(), new in any_json()) {
        assert_round_trip(&old, &new)?;
    }

    #[test]
    fn a_document_has_no_diff_with_itself_or_its_reordering(doc in inventory()) {
        let rules = DiffRules::default();
        prop_assert!(diff(&doc, &doc, &rules).is_empty());
        let shuffled = reordered(&doc);
        let changes = diff(&doc, &shuffled, &rules);
        prop_assert!(changes.is_empty(), "{:?}", changes);
    }
}

#[test]
fn ignored_paths_change_nothing_and_keep_their_old_values() {
    let old = json!({"os": {"uptime_seconds": 1}, "network": {"interfaces": [{"name": "eth0", "counters": {"rx_bytes": 1}}]}});
    let new = json!({"os": {"uptime_seconds": 2}, "network": {"interfaces": [{"name": "eth0", "counters": {"rx_bytes": 5}}]}});
    let rules = DiffRules::default();
    assert!(diff(&old, &new, &rules).is_empty());
    assert_eq!(canonical(&old, &rules), canonical(&new, &rules));
}

/// A stored diff is JSON text: a float must come back from it exactly, or applying the stored
/// diff gives another document than the one reported (the fuzz target found this one).
#[test]
fn a_diff_read_back_from_json_applies_to_exactly_the_new_document() {
    let old = json!({"sensors": {"reading": 0}});
    // Too large for an integer: read as the float 1.7777777777377778e25.
    let new: Value =
        serde_json::from_str(r#"{"sensors": {"reading": 17777777777377777787777777}}"#).unwrap();
    let changes = diff(&old, &new, &DiffRules::default());
    let stored: Vec<InventoryChange> =
        serde_json::from_str(&serde_json::to_string(&changes).unwrap()).unwrap();
    assert_eq!(apply(&old, &stored).unwrap(), new);
}

/// A pattern full of `/**` against a deep path it does not match is answered (at once): trying
/// every skip of every `/**` recursively took exponential time, enough to hang the diff reactor.
#[test]
fn many_any_depth_wildcards_do_not_take_exponential_time() {
    use projections::inventory::rules::PathPattern;
    let deep = format!("{}/end", "/x[0]/y".repeat(20));
    let spread = PathPattern::parse(&format!("{}/nope", "/**/x".repeat(40))).unwrap();
    assert!(!spread.matches(&deep));
    let spread_hit = PathPattern::parse(&format!("{}/end", "/**/y".repeat(20))).unwrap();
    assert!(spread_hit.matches(&deep));
    let stacked = PathPattern::parse(&format!("{}/nope", "/**".repeat(160))).unwrap();
    assert!(!stacked.matches(&deep));
    let stacked_hit = PathPattern::parse(&format!("{}/end", "/**".repeat(160))).unwrap();
    assert!(stacked_hit.matches(&deep));
    let rules = DiffRules::for_tenant(&events_schema::InventoryRulesConfigured {
        ignored_paths: vec![format!("{}/nope", "/**/*".repeat(30))],
        ..Default::default()
    })
    .unwrap();
    assert!(!rules.is_ignored(&deep));
}

/// What a pattern of keys, `*` and `**` should match, the slow obvious way.
fn reference_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((&"**", rest)) => (0..=path.len()).any(|skip| reference_match(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(s, path)| (*first == "*" || first == s) && reference_match(rest, path)),
    }
}

proptest! {
    #[test]
    fn pattern_matching_agrees_with_the_obvious_recursion(
        pattern in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 0..7),
        path in prop::collection::vec(prop::sample::select(vec!["a", "b"]), 0..7),
    ) {
        let render = |segments: &[&str]| {
            segments.iter().map(|s| format!("/{s}")).collect::<String>()
        };
        let parsed = projections::inventory::rules::PathPattern::parse(&render(&pattern)).unwrap();
        prop_assert_eq!(parsed.matches(&render(&path)), reference_match(&pattern, &path));
    }
}
