//! Realistic inventory documents, shaped like what agents send: OS facts, CPUs, memory modules,
//! disks, NICs with addresses, services and installed packages; several hundred fields, ~20 KB.

use serde_json::{json, Value};

/// A small deterministic generator (SplitMix64), so a seed always gives the same machine.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn serial(&mut self, prefix: &str) -> String {
        format!("{prefix}{:010X}", self.next() & 0xff_ffff_ffff)
    }
}

const PACKAGES: &[&str] = &[
    "openssl",
    "openssh-server",
    "bash",
    "coreutils",
    "systemd",
    "curl",
    "wget",
    "glibc",
    "zlib",
    "python3",
    "perl",
    "nginx",
    "postgresql-client",
    "rsync",
    "tar",
    "gzip",
    "xz-utils",
    "sudo",
    "vim",
    "less",
    "iproute2",
    "iptables",
    "nftables",
    "chrony",
    "rsyslog",
    "logrotate",
    "cron",
    "ca-certificates",
    "tzdata",
    "lvm2",
    "mdadm",
    "smartmontools",
    "ethtool",
    "lshw",
    "pciutils",
    "usbutils",
    "dmidecode",
    "kmod",
    "udev",
    "e2fsprogs",
    "xfsprogs",
    "util-linux",
    "procps",
    "psmisc",
    "net-tools",
    "dnsutils",
    "bind9-host",
    "git",
    "make",
    "gcc",
    "libc6",
    "libssl3",
    "libcurl4",
    "libxml2",
    "libyaml",
    "libffi",
    "libpam",
    "libsystemd0",
    "dbus",
    "polkit",
];

/// The inventory of machine `seed` at `revision`. Revisions of one seed differ in a few fields,
/// as consecutive reports of a real machine do (a package upgrade, a new address, uptime).
pub fn realistic_inventory(seed: u64, revision: u32) -> Value {
    let mut rng = Seeded(seed);
    let hostname = format!("srv-{seed:05}.dc1.example.net");
    let cpus: Vec<Value> = (0..2)
        .map(|socket| {
            json!({"socket": socket, "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
                   "cores": 32, "threads": 64, "mhz": 2000 + rng.below(600), "microcode": "0xd0003a5",
                   "flags": ["avx2", "avx512f", "aes", "sse4_2", "vmx", "rdrand"]})
        })
        .collect();
    let memory: Vec<Value> = (0..16)
        .map(|slot| {
            json!({"slot": format!("DIMM_{}{}", ["A", "B", "C", "D"][slot % 4], slot / 4 + 1),
                   "size_bytes": 34_359_738_368u64, "speed_mts": 3200, "type": "DDR4",
                   "manufacturer": "Samsung", "part_number": "M393A4K40DB3-CWE", "serial": rng.serial("S")})
        })
        .collect();
    let disks: Vec<Value> = (0..4)
        .map(|i| {
            json!({"device": format!("nvme{i}n1"), "model": "SAMSUNG MZQL23T8HCLS-00A07", "serial": rng.serial("S64"),
                   "size_bytes": 3_840_755_982_336u64, "firmware": "GDC5902Q", "rotational": false,
                   "smart": {"status": "PASSED", "temperature_c": 30 + rng.below(15), "percentage_used": rng.below(20)},
                   "partitions": [{"name": format!("nvme{i}n1p1"), "size_bytes": 536_870_912, "fs": "vfat", "mount": "/boot/efi"},
                                  {"name": format!("nvme{i}n1p2"), "size_bytes": 3_840_219_111_424u64, "fs": "xfs", "mount": format!("/data{i}")}]})
        })
        .collect();
    let nics: Vec<Value> = (0..4)
        .map(|i| {
            let last = if i == 1 { 10 + revision % 200 } else { 10 + i };
            json!({"name": format!("eth{i}"), "mac": format!("3c:ec:ef:{:02x}:{:02x}:{:02x}", rng.below(256), rng.below(256), i),
                   "driver": "ice", "firmware": "4.20 0x8001778b 1.3346.0", "mtu": 9000, "speed_mbps": 25000, "state": "up",
                   "addresses": [{"family": "inet", "address": format!("10.{}.{}.{last}", seed % 250, i), "prefix": 24},
                                 {"family": "inet6", "address": format!("fe80::3eec:efff:fe{:02x}:{:02x}{:02x}", i, seed % 256, i), "prefix": 64}],
                   "counters": {"rx_bytes": rng.next() % 1_000_000_000_000, "tx_bytes": rng.next() % 1_000_000_000_000}})
        })
        .collect();
    let packages: Vec<Value> = (0..150)
        .map(|i| {
            let name = PACKAGES[i % PACKAGES.len()];
            let bump = if i == 7 { revision } else { 0 };
            json!({"name": if i < PACKAGES.len() { name.to_owned() } else { format!("{name}-extra{}", i / PACKAGES.len()) },
                   "version": format!("{}.{}.{}-{}", 1 + i % 5, i % 13, bump, 1 + i % 4), "arch": "amd64",
                   "installed_size_kb": 100 + (i * 37) % 9000})
        })
        .collect();
    let services: Vec<Value> = [
        "sshd",
        "chronyd",
        "rsyslog",
        "cron",
        "node_exporter",
        "fleetlog-agent",
        "nginx",
    ]
    .iter()
    .map(|name| json!({"name": name, "state": "running", "enabled": true}))
    .collect();
    json!({
        "hostname": hostname,
        "os": {"name": "Debian GNU/Linux", "version": "12", "codename": "bookworm",
               "kernel": format!("6.1.0-{}-amd64", 20 + revision % 3), "arch": "x86_64",
               "uptime_seconds": 86_400 * u64::from(revision + 1), "boot_time": "2026-11-01T08:00:00Z", "timezone": "UTC"},
        "hardware": {"vendor": "Dell Inc.", "model": "PowerEdge R650", "serial": rng.serial("DL"),
                     "bios": {"vendor": "Dell Inc.", "version": "1.10.2", "date": "2026-03-14"},
                     "cpus": cpus, "memory": memory, "disks": disks},
        "network": {"interfaces": nics, "default_gateway": format!("10.{}.0.1", seed % 250),
                    "dns": ["10.0.0.53", "10.0.1.53"], "fqdn": hostname},
        "features": {"selinux": false, "apparmor": true, "secure_boot": true, "tpm": "2.0"},
        "services": services,
        "packages": packages,
        "agent": {"name": "fleetlog-agent", "version": "1.4.2"},
    })
}

/// Revision `revision` of machine `seed` as consecutive reports really differ: on top of
/// [`realistic_inventory`] (eth1's address, the kernel, one package and uptime move with the
/// revision), the agent lists the NICs in another order each time, byte counters grow, one more
/// package is upgraded, and every fifth revision one DIMM is missing (pulled, or not detected).
/// A pair `(revision, revision + 1)` is what the diff reactor sees.
pub fn realistic_revision(seed: u64, revision: u32) -> Value {
    let mut doc = realistic_inventory(seed, revision);
    if let Some(nics) = doc["network"]["interfaces"].as_array_mut() {
        let turn = revision as usize % nics.len().max(1);
        nics.rotate_left(turn);
        for nic in nics.iter_mut() {
            for counter in ["rx_bytes", "tx_bytes"] {
                if let Some(n) = nic["counters"][counter].as_u64() {
                    nic["counters"][counter] = (n + u64::from(revision) * 1_048_576).into();
                }
            }
        }
    }
    if let Some(packages) = doc["packages"].as_array_mut() {
        let len = packages.len().max(1);
        let upgraded = (revision as usize * 7 + seed as usize) % len;
        if let Some(package) = packages.get_mut(upgraded) {
            package["version"] = format!("9.{}.0-1", revision).into();
        }
    }
    if revision % 5 == 4 {
        if let Some(memory) = doc["hardware"]["memory"].as_array_mut() {
            let pulled = (seed as usize + revision as usize) % memory.len().max(1);
            memory.remove(pulled);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_about_20_kb_and_revisions_differ_in_a_few_places() {
        let a = serde_json::to_vec(&realistic_inventory(7, 0)).unwrap();
        let b = serde_json::to_vec(&realistic_inventory(7, 1)).unwrap();
        assert!((15_000..30_000).contains(&a.len()), "{} bytes", a.len());
        assert_ne!(a, b);
        assert_eq!(realistic_inventory(7, 1), realistic_inventory(7, 1));
        assert_ne!(realistic_inventory(8, 0), realistic_inventory(7, 0));
    }

    #[test]
    fn revisions_reorder_nics_grow_counters_and_sometimes_lose_a_dimm() {
        let a = realistic_revision(3, 3);
        let b = realistic_revision(3, 4);
        let names = |d: &Value| -> Vec<String> {
            d["network"]["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_ne!(names(&a), names(&b));
        assert_eq!(a["hardware"]["memory"].as_array().unwrap().len(), 16);
        assert_eq!(b["hardware"]["memory"].as_array().unwrap().len(), 15);
        assert_eq!(realistic_revision(3, 4), b);
    }
}
