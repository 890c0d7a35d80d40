//! Hardware observations from the output of `lshw -json`.
//!
//! Agents upload `lshw -json` unmodified; this module turns it into the asset's identity and the
//! list of components that carry a serial number, which is what the asset stream records
//! ([`events_schema::HardwareObserved`]). Everything here is pure: no I/O, no clock.
//!
//! # What is read
//!
//! `lshw -json` prints one tree of nodes: older versions print the root node object, newer
//! versions an array holding it. The root (class `system`) is the machine: its `serial`,
//! `vendor` and `product` become the asset serial, vendor and model. Every other node with a
//! usable serial becomes an [`ObservedComponent`], in document order, the first node with a
//! given serial winning:
//!
//! | field            | taken from                                                             |
//! |------------------|------------------------------------------------------------------------|
//! | `class`          | `disk`, `memory`, `network`, `storage` as is; `processor` → `cpu`; `power` → `psu`; any other lshw class as is |
//! | `serial`         | `serial`, trimmed (for network nodes this is the MAC address, which identifies the card) |
//! | `vendor`/`model` | `vendor` / `product`                                                   |
//! | `firmware`       | `configuration.firmware`; else `version` for `disk` nodes and for `storage` nodes that are not plain PCI functions (on a PCI function `version` is the PCI revision ID, e.g. `"09"`, not firmware; network cards report firmware only in `configuration`) |
//! | `slot`           | `slot`; else `businfo` (e.g. `pci@0000:3d:00.0`); else `physid`        |
//! | `capacity_bytes` | `size`, else `capacity`, only when `units` is `bytes`                  |
//!
//! Not components, and skipped:
//!
//! - nodes without a usable serial: missing, empty, all zeros, or a firmware placeholder such
//!   as `Not Specified`, `To Be Filled By O.E.M.`, `NO DIMM` (see `PLACEHOLDERS`, compared
//!   trimmed and ASCII case-insensitively). Their children are still read, so the banks under
//!   a serial-less `System Memory` node are kept. Vendor, model, firmware and `slot` values
//!   that are placeholders are dropped the same way;
//! - `volume` nodes and everything under them: their `serial` is a file system or partition
//!   UUID, which changes when a disk is reformatted, not when hardware changes;
//! - `network` nodes whose serial is a locally administered MAC address (bridges, bonds' own
//!   addresses, containers' veths, SR-IOV virtual functions): no card carries that address;
//! - nodes that repeat the asset serial (a board reporting the chassis serial is the asset).
//!
//! Values that are `null` count as absent. A field this module reads that has the wrong type is
//! an error, as is a node that is not an object; fields it does not read are not checked.

use std::collections::HashSet;
use std::rc::Rc;

use events_schema::ObservedComponent;
use serde_json::{Map, Value};

/// What one `lshw -json` run says about a machine: the identity of the asset and every
/// component in it that has a serial number.
///
/// It exists so that the ingest API can register the asset and append a
/// [`HardwareObserved`](events_schema::HardwareObserved) event without knowing lshw's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LshwObservation {
    /// The root node's serial number: the asset's identity.
    pub asset_serial: String,
    /// The root node's vendor (e.g. `Dell Inc.`), if it reports a usable one.
    pub vendor: Option<String>,
    /// The root node's product (e.g. `PowerEdge R640`), if it reports a usable one.
    pub model: Option<String>,
    /// Every other node with a usable serial number, in document order, one per serial.
    pub components: Vec<ObservedComponent>,
}

/// Why a document could not be read as the output of `lshw -json`.
///
/// It exists so that the ingest API can reject a bad upload with a message that says what is
/// wrong and where (`path` names nodes by their lshw `id`s, e.g. `/core/memory/bank:0`, or by
/// their index among their siblings, e.g. `/core/#3`, when they have no id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LshwError {
    /// The document is neither a node object nor an array holding one.
    #[error(
        "expected the output of `lshw -json` (an object, or an array holding one), found {found}"
    )]
    NotAnObject {
        /// What was found instead, e.g. `a string`.
        found: &'static str,
    },
    /// The document is an array, but not of exactly one root node.
    #[error("expected the output of `lshw -json` to hold exactly one root node, found {count}")]
    WrongRootCount {
        /// How many elements the array has.
        count: usize,
    },
    /// The root node is not a whole machine (e.g. the output of `lshw -json -class disk`).
    #[error(
        "the root node has class {class:?}; expected \"system\" (run `lshw -json` without -class)"
    )]
    NotASystem {
        /// The root node's class.
        class: String,
    },
    /// The root node has no serial number that identifies the machine.
    #[error(
        "the root node has no usable serial number (missing, empty, or a placeholder such as \"To Be Filled By O.E.M.\")"
    )]
    NoAssetSerial,
    /// A node lacks a field every lshw node has.
    #[error("node {path}: required field `{field}` is missing")]
    MissingField {
        /// Where the node is.
        path: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("node {path}: field `{field}` should be {expected}, found {found}")]
    InvalidField {
        /// Where the node is.
        path: String,
        /// The field, e.g. `size` or `configuration.firmware`.
        field: &'static str,
        /// The type lshw writes there, e.g. `a string`.
        expected: &'static str,
        /// What was found instead.
        found: &'static str,
    },
    /// An element of a node's `children` is not a node object.
    #[error("node {path}: child #{index} should be an object, found {found}")]
    ChildNotAnObject {
        /// Where the parent node is.
        path: String,
        /// The child's index in `children`.
        index: usize,
        /// What was found instead.
        found: &'static str,
    },
}

/// Reads the output of `lshw -json` (either shape) into the asset and its serialised components.
///
/// It exists so that hardware observations can be ingested from the tool every Linux machine
/// already has. See the [module documentation](self) for exactly what is read and what is
/// skipped. The tree is walked with an explicit stack, so nesting depth costs heap, not stack.
///
/// # Errors
///
/// [`LshwError`] when the document is not one lshw root node of class `system`, when the root
/// has no usable serial, or when a node or a field this reads has the wrong shape. It never
/// panics.
pub fn parse_lshw(document: &Value) -> Result<LshwObservation, LshwError> {
    let root = Node {
        fields: root_object(document)?,
        place: Rc::new(Place {
            parent: None,
            id: None,
            index: 0,
        }),
    };
    let class = root.required_str("class")?;
    if class != "system" {
        return Err(LshwError::NotASystem {
            class: class.to_owned(),
        });
    }
    let asset_serial = root
        .str("serial")?
        .and_then(usable)
        .ok_or(LshwError::NoAssetSerial)?;
    let vendor = root.str("vendor")?.and_then(usable).map(str::to_owned);
    let model = root.str("product")?.and_then(usable).map(str::to_owned);

    let mut seen: HashSet<&str> = HashSet::from([asset_serial]);
    let mut components = Vec::new();
    let mut stack = Vec::new();
    root.push_children(&mut stack)?;
    while let Some(node) = stack.pop() {
        let class = node.required_str("class")?;
        if class == "volume" {
            continue;
        }
        if let Some((serial, component)) = node.component(class)? {
            if seen.insert(serial) {
                components.push(component);
            }
        }
        node.push_children(&mut stack)?;
    }

    Ok(LshwObservation {
        asset_serial: asset_serial.to_owned(),
        vendor,
        model,
        components,
    })
}

/// Serial (and other) values that firmware writes when it has nothing to say. Compared trimmed
/// and ASCII case-insensitively; strings of only zeros are placeholders too.
const PLACEHOLDERS: &[&str] = &[
    "Not Specified",
    "To Be Filled By O.E.M.",
    "Default string",
    "None",
    "Unknown",
    "System Serial Number",
    "Chassis Serial Number",
    "Base Board Serial Number",
    "0123456789",
    "NO DIMM",
    "Empty",
    "[Empty]",
    "N/A",
    "Not Available",
    "Not Provided",
];

/// `value` trimmed, unless that is empty, all zeros or a placeholder.
fn usable(value: &str) -> Option<&str> {
    let value = value.trim();
    let placeholder = value.bytes().all(|byte| byte == b'0')
        || PLACEHOLDERS
            .iter()
            .any(|placeholder| value.eq_ignore_ascii_case(placeholder));
    (!placeholder).then_some(value)
}

/// `value` trimmed, unless that is empty.
fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// Whether `serial` is a 48-bit MAC address with the locally administered bit set.
fn is_locally_administered_mac(serial: &str) -> bool {
    let is_mac = serial.split(':').count() == 6
        && serial
            .split(':')
            .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
    is_mac
        && serial
            .get(..2)
            .and_then(|octet| u8::from_str_radix(octet, 16).ok())
            .is_some_and(|first| first & 0x02 != 0)
}

/// Whether `version` is a PCI revision ID (two hex digits) on a PCI function.
fn is_pci_revision(businfo: Option<&str>, version: &str) -> bool {
    businfo.is_some_and(|businfo| businfo.trim_start().starts_with("pci@"))
        && version.len() == 2
        && version.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The component class Fleetlog uses for an lshw class.
fn normalized_class(lshw_class: &str) -> &str {
    match lshw_class {
        "processor" => "cpu",
        "power" => "psu",
        other => other,
    }
}

/// A JSON type's name, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The root node object of either shape of `lshw -json` output.
fn root_object(document: &Value) -> Result<&Map<String, Value>, LshwError> {
    match document {
        Value::Object(fields) => Ok(fields),
        Value::Array(items) => match items.as_slice() {
            [Value::Object(fields)] => Ok(fields),
            [other] => Err(LshwError::NotAnObject { found: kind(other) }),
            _ => Err(LshwError::WrongRootCount { count: items.len() }),
        },
        other => Err(LshwError::NotAnObject { found: kind(other) }),
    }
}

/// Where a node is in the tree; rendered as a path only when an error needs it, so that walking
/// a deep tree stays linear.
struct Place<'a> {
    /// `None` for the root.
    parent: Option<Rc<Place<'a>>>,
    id: Option<&'a str>,
    index: usize,
}

impl Place<'_> {
    /// The path, e.g. `/core/memory/bank:0`; `#3` stands for the fourth child without an id.
    fn path(&self) -> String {
        let mut segments = Vec::new();
        let mut place = self;
        while let Some(parent) = &place.parent {
            segments.push(match place.id {
                Some(id) => id.to_owned(),
                None => format!("#{}", place.index),
            });
            place = parent;
        }
        segments.reverse();
        format!("/{}", segments.join("/"))
    }
}

impl Drop for Place<'_> {
    /// Unlinks the chain of ancestors one by one: the default, recursive drop would overflow the
    /// stack on a deep tree.
    fn drop(&mut self) {
        let mut parent = self.parent.take();
        while let Some(place) = parent {
            parent = match Rc::try_unwrap(place) {
                Ok(mut place) => place.parent.take(),
                Err(_still_shared) => None,
            };
        }
    }
}

/// One lshw node and where it is, for error messages.
struct Node<'a> {
    fields: &'a Map<String, Value>,
    place: Rc<Place<'a>>,
}

impl<'a> Node<'a> {
    fn path(&self) -> String {
        self.place.path()
    }

    fn invalid(&self, field: &'static str, expected: &'static str, found: &Value) -> LshwError {
        LshwError::InvalidField {
            path: self.path(),
            field,
            expected,
            found: kind(found),
        }
    }

    fn str(&self, field: &'static str) -> Result<Option<&'a str>, LshwError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(self.invalid(field, "a string", other)),
        }
    }

    fn required_str(&self, field: &'static str) -> Result<&'a str, LshwError> {
        self.str(field)?.ok_or_else(|| LshwError::MissingField {
            path: self.path(),
            field,
        })
    }

    fn u64(&self, field: &'static str) -> Result<Option<u64>, LshwError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_u64() {
                Some(number) => Ok(Some(number)),
                None => Err(self.invalid(field, "a non-negative integer", value)),
            },
        }
    }

    /// `configuration.firmware`, if present and usable.
    fn configured_firmware(&self) -> Result<Option<&'a str>, LshwError> {
        let configuration = match self.fields.get("configuration") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(configuration)) => configuration,
            Some(other) => return Err(self.invalid("configuration", "an object", other)),
        };
        match configuration.get("firmware") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(firmware)) => Ok(usable(firmware)),
            Some(other) => Err(self.invalid("configuration.firmware", "a string", other)),
        }
    }

    /// Pushes this node's children so that they pop off `stack` in document order.
    fn push_children(&self, stack: &mut Vec<Node<'a>>) -> Result<(), LshwError> {
        let children = match self.fields.get("children") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(children)) => children,
            Some(other) => return Err(self.invalid("children", "an array", other)),
        };
        for (index, child) in children.iter().enumerate().rev() {
            let Value::Object(fields) = child else {
                return Err(LshwError::ChildNotAnObject {
                    path: self.path(),
                    index,
                    found: kind(child),
                });
            };
            let place = Place {
                parent: Some(Rc::clone(&self.place)),
                id: fields.get("id").and_then(Value::as_str).and_then(non_empty),
                index,
            };
            stack.push(Node {
                fields,
                place: Rc::new(place),
            });
        }
        Ok(())
    }

    /// This node as a component, with its serial, if it has a usable serial and is hardware.
    fn component(
        &self,
        lshw_class: &str,
    ) -> Result<Option<(&'a str, ObservedComponent)>, LshwError> {
        let Some(serial) = self.str("serial")?.and_then(usable) else {
            return Ok(None);
        };
        if lshw_class == "network" && is_locally_administered_mac(serial) {
            return Ok(None);
        }
        let version = self.str("version")?.and_then(usable);
        let businfo = self.str("businfo")?.and_then(non_empty);
        let firmware = match self.configured_firmware()? {
            Some(firmware) => Some(firmware),
            None => match lshw_class {
                "disk" => version,
                "storage" => version.filter(|version| !is_pci_revision(businfo, version)),
                _ => None,
            },
        };
        let physid = self.str("physid")?.and_then(non_empty);
        let slot = self.str("slot")?.and_then(usable).or(businfo).or(physid);
        let units = self.str("units")?;
        let size = self.u64("size")?;
        let capacity = self.u64("capacity")?;
        let capacity_bytes = units
            .is_some_and(|units| units.trim().eq_ignore_ascii_case("bytes"))
            .then_some(size.or(capacity))
            .flatten();
        let component = ObservedComponent {
            class: normalized_class(lshw_class).to_owned(),
            vendor: self.str("vendor")?.and_then(usable).map(str::to_owned),
            model: self.str("product")?.and_then(usable).map(str::to_owned),
            serial: serial.to_owned(),
            firmware: firmware.map(str::to_owned),
            slot: slot.map(str::to_owned),
            capacity_bytes,
        };
        Ok(Some((serial, component)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SERVER: &str = include_str!("../../tests/fixtures/lshw-server.json");

    fn server() -> Value {
        serde_json::from_str(SERVER).expect("fixture is JSON")
    }

    fn component(
        class: &str,
        vendor: Option<&str>,
        model: Option<&str>,
        serial: &str,
        firmware: Option<&str>,
        slot: &str,
        capacity_bytes: Option<u64>,
    ) -> ObservedComponent {
        ObservedComponent {
            class: class.to_owned(),
            vendor: vendor.map(str::to_owned),
            model: model.map(str::to_owned),
            serial: serial.to_owned(),
            firmware: firmware.map(str::to_owned),
            slot: Some(slot.to_owned()),
            capacity_bytes,
        }
    }

    fn dimm(serial: &str, slot: &str) -> ObservedComponent {
        let model = Some("M393A4K40CB2-CTD");
        let size = Some(32 << 30);
        component("memory", Some("Samsung"), model, serial, None, slot, size)
    }

    /// A minimal root with the given children.
    fn machine(children: Value) -> Value {
        json!({"id": "host", "class": "system", "serial": "ASSET1", "children": children})
    }

    fn components_of(children: Value) -> Vec<ObservedComponent> {
        parse_lshw(&machine(children)).unwrap().components
    }

    #[test]
    fn the_fixture_gives_the_asset_and_its_components() {
        let observation = parse_lshw(&server()).unwrap();
        assert_eq!(observation.asset_serial, "S348716X9B21742");
        assert_eq!(observation.vendor.as_deref(), Some("Supermicro"));
        assert_eq!(observation.model.as_deref(), Some("SYS-1029U-TRT"));

        let ssd = Some("SAMSUNG MZ7LH960");
        let ssd_size = Some(960_197_124_096);
        let intel = Some("Intel Corporation");
        let x540 = Some("Ethernet Controller 10-Gigabit X540-AT2");
        let nic_firmware = Some("0x80000389");
        let psu = (Some("SUPERMICRO"), Some("PWS-751P-1R"));
        let expected = vec![
            // The motherboard: its `slot` is a placeholder, it has no businfo, so physid.
            component(
                "bus",
                Some("Supermicro"),
                Some("X11DPU"),
                "ZM19AS012345",
                None,
                "0",
                None,
            ),
            dimm("38A1F2C4", "P1-DIMMA1"),
            dimm("38A1F3D7", "P1-DIMMB1"),
            dimm("38A1E09B", "P2-DIMMA1"),
            dimm("38A1E1A2", "P2-DIMMB1"),
            component(
                "disk",
                None,
                ssd,
                "S45NNE0M812345",
                Some("404Q"),
                "scsi@0:0.0.0",
                ssd_size,
            ),
            component(
                "disk",
                None,
                ssd,
                "S45NNE0M812391",
                Some("404Q"),
                "scsi@1:0.0.0",
                ssd_size,
            ),
            component(
                "storage",
                intel,
                Some("INTEL SSDPE2KX020T8"),
                "PHLJ9123004M2P0BGN",
                Some("VDV10170"),
                "pci@0000:3b:00.0",
                None,
            ),
            component(
                "network",
                intel,
                x540,
                "ac:1f:6b:4e:2a:10",
                nic_firmware,
                "pci@0000:3d:00.0",
                None,
            ),
            component(
                "network",
                intel,
                x540,
                "ac:1f:6b:4e:2a:11",
                nic_firmware,
                "pci@0000:3d:00.1",
                None,
            ),
            component("psu", psu.0, psu.1, "P751PCI28AT1234", None, "PSU1", None),
            component("psu", psu.0, psu.1, "P751PCI28AT1301", None, "PSU2", None),
        ];
        assert_eq!(observation.components, expected);
    }

    #[test]
    fn placeholders_serial_less_nodes_volumes_and_virtual_nics_are_skipped() {
        let observation = parse_lshw(&server()).unwrap();
        let serials: Vec<&str> = observation
            .components
            .iter()
            .map(|component| component.serial.as_str())
            .collect();
        // The empty bank ("NO DIMM"), the CPUs ("Not Specified"), the file systems' UUIDs and
        // docker0's locally administered MAC.
        for skipped in [
            "NO DIMM",
            "Not Specified",
            "3c1d-9a2f",
            "6a1f0e3b-52c4-4d8e-9b7a-2f4c1d0e9a83",
            "02:42:7c:91:3e:5a",
        ] {
            assert!(!serials.contains(&skipped), "{skipped} was kept");
        }
        assert!(observation
            .components
            .iter()
            .all(|component| component.class != "cpu" && component.class != "volume"));

        let placeholders = [
            "",
            "   ",
            "Not Specified",
            " to be filled by o.e.m. ",
            "Default string",
            "None",
            "UNKNOWN",
            "0",
            "00000000",
            "0000-0000",
            "System Serial Number",
            "NO DIMM",
        ];
        let children: Vec<Value> = placeholders
            .iter()
            .map(|serial| json!({"class": "memory", "serial": serial}))
            .collect();
        let children = Value::Array(children);
        let serials: Vec<String> = components_of(children)
            .into_iter()
            .map(|component| component.serial)
            .collect();
        assert_eq!(
            serials,
            ["0000-0000"],
            "only the all-zeros-with-a-dash serial is not a placeholder"
        );
    }

    #[test]
    fn children_of_serial_less_nodes_are_kept() {
        let children = json!([{
            "id": "memory", "class": "memory", "description": "System Memory",
            "units": "bytes", "size": 8_589_934_592_u64,
            "children": [
                {"id": "bank:0", "class": "memory", "serial": "DEADBEEF", "slot": "DIMM_A1",
                 "units": "bytes", "size": 8_589_934_592_u64}
            ]
        }]);
        let components = components_of(children);
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].serial, "DEADBEEF");
        assert_eq!(components[0].class, "memory");
    }

    #[test]
    fn an_array_wrapped_root_and_a_bare_root_read_the_same() {
        let wrapped = server();
        let bare = wrapped[0].clone();
        assert!(bare.is_object());
        assert_eq!(parse_lshw(&wrapped).unwrap(), parse_lshw(&bare).unwrap());
    }

    #[test]
    fn no_asset_serial_is_an_error() {
        for serial in [
            json!(null),
            json!(""),
            json!("To Be Filled By O.E.M."),
            json!("0"),
        ] {
            let mut document = server();
            document[0]["serial"] = serial;
            assert_eq!(parse_lshw(&document), Err(LshwError::NoAssetSerial));
        }
        let mut document = server();
        document[0].as_object_mut().unwrap().remove("serial");
        assert_eq!(parse_lshw(&document), Err(LshwError::NoAssetSerial));
    }

    #[test]
    fn a_non_object_is_an_error() {
        for (document, expected) in [
            (json!("lshw"), LshwError::NotAnObject { found: "a string" }),
            (json!(42), LshwError::NotAnObject { found: "a number" }),
            (json!(null), LshwError::NotAnObject { found: "null" }),
            (json!([1]), LshwError::NotAnObject { found: "a number" }),
            (json!([]), LshwError::WrongRootCount { count: 0 }),
            (json!([{}, {}]), LshwError::WrongRootCount { count: 2 }),
        ] {
            assert_eq!(parse_lshw(&document), Err(expected));
        }
    }

    #[test]
    fn the_root_must_be_a_system() {
        let document = json!({"class": "disk", "serial": "X"});
        assert_eq!(
            parse_lshw(&document),
            Err(LshwError::NotASystem {
                class: "disk".to_owned()
            })
        );
        assert_eq!(
            parse_lshw(&json!({"serial": "X"})),
            Err(LshwError::MissingField {
                path: "/".to_owned(),
                field: "class"
            })
        );
    }

    #[test]
    fn ill_typed_fields_are_errors_that_say_where() {
        let mut document = server();
        document[0]["children"][0]["children"][1]["children"][0]["size"] = json!("32 GiB");
        let error = parse_lshw(&document).unwrap_err();
        assert_eq!(
            error,
            LshwError::InvalidField {
                path: "/core/memory/bank:0".to_owned(),
                field: "size",
                expected: "a non-negative integer",
                found: "a string",
            }
        );
        assert_eq!(
            error.to_string(),
            "node /core/memory/bank:0: field `size` should be a non-negative integer, found a string"
        );

        let cases = [
            (
                json!({"class": "system", "serial": 12345}),
                LshwError::InvalidField {
                    path: "/".to_owned(),
                    field: "serial",
                    expected: "a string",
                    found: "a number",
                },
            ),
            (
                machine(json!({"id": "core"})),
                LshwError::InvalidField {
                    path: "/".to_owned(),
                    field: "children",
                    expected: "an array",
                    found: "an object",
                },
            ),
            (
                machine(json!([{"class": "bus", "children": ["x"]}])),
                LshwError::ChildNotAnObject {
                    path: "/#0".to_owned(),
                    index: 0,
                    found: "a string",
                },
            ),
            (
                machine(json!([{"id": "disk", "serial": "S1"}])),
                LshwError::MissingField {
                    path: "/disk".to_owned(),
                    field: "class",
                },
            ),
            (
                machine(json!([{"id": "disk", "class": "disk", "serial": "S1", "size": -1}])),
                LshwError::InvalidField {
                    path: "/disk".to_owned(),
                    field: "size",
                    expected: "a non-negative integer",
                    found: "a number",
                },
            ),
            (
                machine(
                    json!([{"id": "eth", "class": "network", "serial": "00:11:22:33:44:55",
                                "configuration": {"firmware": 7}}]),
                ),
                LshwError::InvalidField {
                    path: "/eth".to_owned(),
                    field: "configuration.firmware",
                    expected: "a string",
                    found: "a number",
                },
            ),
            (
                machine(
                    json!([{"id": "eth", "class": "network", "serial": "00:11:22:33:44:55",
                                "configuration": ["firmware"]}]),
                ),
                LshwError::InvalidField {
                    path: "/eth".to_owned(),
                    field: "configuration",
                    expected: "an object",
                    found: "an array",
                },
            ),
        ];
        for (document, expected) in cases {
            assert_eq!(parse_lshw(&document), Err(expected), "{document}");
        }
    }

    #[test]
    fn classes_firmware_slots_and_capacities_are_mapped() {
        let components = components_of(json!([
            {"class": "processor", "serial": "CPU-SN-1", "version": "6.85.4",
             "businfo": "cpu@0", "units": "Hz", "size": 2_100_000_000_u64},
            {"class": "power", "serial": "PSU-SN-1", "physid": "1", "units": "mWh", "capacity": 750},
            // A disk without `size` (no medium): capacity when units are bytes.
            {"class": "disk", "serial": "DISK-1", "version": "0001", "slot": "Not Specified",
             "physid": "0.0.0", "units": "bytes", "capacity": 4_000_787_030_016_u64},
            // Firmware from `configuration` wins over `version`.
            {"class": "disk", "serial": "DISK-2", "version": "GXA7", "configuration": {"firmware": "GXA8"}},
            // A RAID controller's `version` is its PCI revision, not firmware.
            {"class": "storage", "serial": "RAID-1", "version": "02", "businfo": "pci@0000:18:00.0"},
            // A network card's `version` is its PCI revision; it has no firmware here.
            {"class": "network", "serial": "b8:59:9f:00:11:22", "version": "00", "businfo": "pci@0000:5e:00.0"},
            {"class": "display", "serial": "GPU-1", "slot": " PCIe Slot 2 ", "businfo": "pci@0000:af:00.0"},
            {"class": "bus", "serial": "USB-HUB"}
        ]));
        let view: Vec<_> = components
            .iter()
            .map(|c| {
                (
                    c.class.as_str(),
                    c.serial.as_str(),
                    c.firmware.as_deref(),
                    c.slot.as_deref(),
                    c.capacity_bytes,
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                ("cpu", "CPU-SN-1", None, Some("cpu@0"), None),
                ("psu", "PSU-SN-1", None, Some("1"), None),
                (
                    "disk",
                    "DISK-1",
                    Some("0001"),
                    Some("0.0.0"),
                    Some(4_000_787_030_016)
                ),
                ("disk", "DISK-2", Some("GXA8"), None, None),
                ("storage", "RAID-1", None, Some("pci@0000:18:00.0"), None),
                (
                    "network",
                    "b8:59:9f:00:11:22",
                    None,
                    Some("pci@0000:5e:00.0"),
                    None
                ),
                ("display", "GPU-1", None, Some("PCIe Slot 2"), None),
                ("bus", "USB-HUB", None, None, None),
            ]
        );
    }

    #[test]
    fn serials_are_deduplicated_first_wins_and_the_asset_serial_is_not_a_component() {
        let components = components_of(json!([
            {"class": "bus", "serial": "ASSET1", "description": "Motherboard"},
            {"class": "network", "id": "eno1", "serial": "0c:c4:7a:00:00:01", "businfo": "pci@0000:01:00.0"},
            {"class": "network", "id": "bond0", "serial": "0c:c4:7a:00:00:01"},
            {"class": "network", "id": "veth", "serial": "fe:ab:cd:00:00:01"}
        ]));
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].slot.as_deref(), Some("pci@0000:01:00.0"));
    }

    #[test]
    fn deep_trees_do_not_overflow_the_stack() {
        let depth = 20_000;
        let mut node = json!({"class": "disk", "serial": "LEAF"});
        for _ in 0..depth {
            // Not `json!`: it would serialize `node` again, recursively.
            let mut fields = Map::new();
            fields.insert("class".to_owned(), Value::from("bus"));
            fields.insert("children".to_owned(), Value::Array(vec![node]));
            node = Value::Object(fields);
        }
        let mut document = machine(json!([]));
        document["children"] = Value::Array(vec![node]);
        let components = parse_lshw(&document).unwrap().components;
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].serial, "LEAF");
        // `Value`'s own `Drop` is recursive; take the tree apart by hand.
        let mut next = document;
        while let Value::Object(mut fields) = next {
            next = match fields.remove("children") {
                Some(Value::Array(mut children)) => children.pop().unwrap_or(Value::Null),
                _ => Value::Null,
            };
        }
    }
}
