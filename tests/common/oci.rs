//! Container image fixtures: a real registry (`docker-registry`, the
//! reference distribution server) on 127.0.0.1, and OCI image layouts built
//! from the shared Alpine minirootfs tarballs (pushed with real `skopeo`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{mirror_dir, require};

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A `docker-registry` serving from a temp dir; stopped on drop.
pub struct Registry {
    pub host: String,
    pub storage: PathBuf,
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or `None` (after `require`) if the tools are missing.
    pub fn start() -> Option<Registry> {
        if !require(
            have("docker-registry") && have("skopeo"),
            "docker-registry and skopeo (apt-get install docker-registry skopeo)",
        ) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("xroot-registry-")
            .tempdir()
            .expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        // A port of our own: bind, note it, release it for the registry.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting docker-registry");
        let r = Registry {
            host,
            storage,
            log,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.get_ok("/v2/") {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up: {}",
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(r)
    }

    fn get_ok(&self, path: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.host);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200")
    }

    /// How many times the registry served GET of this blob (its access log).
    pub fn blob_gets(&self, digest: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }

    /// The file the registry keeps a blob's bytes in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `skopeo copy --all` of a layout's tag into this registry as `name:tag`.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) {
        self.push_as(layout, tag, name, &[]);
    }

    /// [`push`](Self::push) with more skopeo options (`--format v2s2`).
    pub fn push_as(&self, layout: &Path, tag: &str, name: &str, more: &[&str]) {
        let o = Command::new("skopeo")
            .args(["copy", "--all", "--dest-tls-verify=false", "--quiet"])
            .args(more)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host))
            .output()
            .expect("running skopeo");
        assert!(
            o.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
}

/// One platform of a test image: the mirror's arch name and the OCI platform.
pub struct Arch {
    pub alpine: &'static str,
    pub goarch: &'static str,
    pub variant: Option<&'static str>,
}

pub const ARCHES: [Arch; 4] = [
    Arch {
        alpine: "aarch64",
        goarch: "arm64",
        variant: Some("v8"),
    },
    Arch {
        alpine: "s390x",
        goarch: "s390x",
        variant: None,
    },
    Arch {
        alpine: "riscv64",
        goarch: "riscv64",
        variant: None,
    },
    Arch {
        alpine: "armv7",
        goarch: "arm",
        variant: Some("v7"),
    },
];

/// What [`build_layout`] made, for the tests' checks.
pub struct Built {
    /// Per arch (as in `ARCHES`): (manifest digest, base layer digest).
    pub images: Vec<(String, String)>,
    /// The shared second layer (zstd, with whiteouts).
    pub top_layer: String,
    pub index: String,
}

/// The second layer every platform shares: it deletes `/etc/motd`
/// (`.wh.motd`), makes `/etc/apk` opaque (`.wh..wh..opq`: the lower
/// layer's `world`, `repositories`, `keys/` vanish) with a new `arch` file
/// in it, and adds `/etc/xroot-layer`.
pub fn top_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], dir: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", b"", true);
    add("etc/.wh.motd", b"", false);
    add("etc/apk/", b"", true);
    add("etc/apk/.wh..wh..opq", b"", false);
    add("etc/apk/arch", b"overlaid\n", false);
    add("etc/xroot-layer", b"second layer\n", false);
    b.into_inner().unwrap()
}

/// A tar compressed with zstd, else gzip.
pub fn compress(tar: &[u8], zstd: bool) -> Vec<u8> {
    if zstd {
        return zstd::encode_all(tar, 3).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

/// Writes an OCI image layout at `dir` with one multi-platform index
/// tagged `tag`: per arch, its Alpine minirootfs (gzip, as published)
/// plus [`top_layer`] (zstd or gzip: Docker's formats have no zstd).
pub fn build_layout(dir: &Path, tag: &str, zstd: bool) -> Built {
    build_layout_with(dir, tag, &top_layer(), zstd)
}

/// [`build_layout`] with another second layer (a plain tar, compressed here).
pub fn build_layout_with(dir: &Path, tag: &str, top_tar: &[u8], zstd: bool) -> Built {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let d = sha256(b);
        std::fs::write(blobs.join(&d), b).unwrap();
        (format!("sha256:{d}"), b.len())
    };
    let top = compress(top_tar, zstd);
    let mut raw_top = Vec::new();
    if zstd {
        raw_top = zstd::decode_all(&top[..]).unwrap();
    } else {
        flate2::read::GzDecoder::new(&top[..])
            .read_to_end(&mut raw_top)
            .unwrap();
    }
    let top_diff = sha256(&raw_top);
    let top_type = if zstd { "tar+zstd" } else { "tar+gzip" };
    let (top_digest, top_size) = put(&top);
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for a in &ARCHES {
        let tgz = mirror_dir().join(format!(
            "v3.20/releases/{0}/alpine-minirootfs-3.20.3-{0}.tar.gz",
            a.alpine
        ));
        let base = std::fs::read(&tgz).unwrap_or_else(|e| panic!("{}: {e}", tgz.display()));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&base[..])
            .read_to_end(&mut raw)
            .unwrap();
        let base_diff = sha256(&raw);
        let (base_digest, base_size) = put(&base);
        let variant = a
            .variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        let config = format!(
            r#"{{"architecture":"{}","os":"linux"{variant},"config":{{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{base_diff}","sha256:{top_diff}"]}}}}"#,
            a.goarch
        );
        let (cdigest, csize) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cdigest}","size":{csize}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{base_digest}","size":{base_size}}},{{"mediaType":"application/vnd.oci.image.layer.v1.{top_type}","digest":"{top_digest}","size":{top_size}}}]}}"#
        );
        let (mdigest, msize) = put(manifest.as_bytes());
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{mdigest}","size":{msize},"platform":{{"architecture":"{}","os":"linux"{variant}}}}}"#,
            a.goarch
        ));
        images.push((mdigest, base_digest));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let (idigest, isize) = put(index.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{idigest}","size":{isize},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#
        ),
    )
    .unwrap();
    Built {
        images,
        top_layer: top_digest,
        index: idigest,
    }
}

/// How an [`AuthGate`] wants clients to authenticate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A `Bearer` challenge; the token endpoint hands out tokens freely
    /// (as Docker Hub does for anonymous pulls)...
    Token,
    /// ... or only for these `user:password` (Basic) credentials.
    TokenForCredentials(&'static str),
    /// A `Basic` challenge for these credentials.
    Basic(&'static str),
    /// [`Gate::Token`], and the first blob larger than 1 MB has its
    /// connection closed half-way (as a flaky network does).
    TokenCutFirstBlob,
}

/// An authenticating front to a [`Registry`] (which has no auth of its
/// own): it answers unauthenticated requests with a `401` and a
/// `WWW-Authenticate` challenge, serves `/token`, and passes requests that
/// carry a token it issued (or the right Basic credentials) through to
/// the real registry, relaying its answer.
pub struct AuthGate {
    pub host: String,
    pub token_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: std::sync::Arc<tiny_http::Server>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl AuthGate {
    pub fn start(registry: &Registry, gate: Gate) -> AuthGate {
        use base64::Engine;
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let host = format!("127.0.0.1:{}", server.server_addr().to_ip().unwrap().port());
        let token_requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, me, upstream, count) = (
            server.clone(),
            host.clone(),
            registry.host.clone(),
            token_requests.clone(),
        );
        let basic = |creds: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            )
        };
        let handle = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().redirects(0).build();
            let mut cut = gate == Gate::TokenCutFirstBlob;
            for req in s.incoming_requests() {
                let header = |name: &'static str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.equiv(name))
                        .map(|h| h.value.as_str().to_string())
                };
                let auth = header("Authorization").unwrap_or_default();
                let url = req.url().to_string();
                let header_of = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).unwrap();
                if url.starts_with("/token") {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let allowed = match gate {
                        Gate::TokenForCredentials(c) => auth == basic(c),
                        _ => true,
                    };
                    let resp = if allowed {
                        tiny_http::Response::from_string(r#"{"token":"gate-token"}"#)
                    } else {
                        tiny_http::Response::from_string("denied").with_status_code(401)
                    };
                    let _ = req.respond(resp);
                    continue;
                }
                let (ok, challenge) = match gate {
                    Gate::Basic(c) => (auth == basic(c), r#"Basic realm="gate""#.to_string()),
                    _ => (
                        auth == "Bearer gate-token",
                        format!(
                            r#"Bearer realm="http://{me}/token",service="gate",scope="repository:xroot/alpine:pull""#
                        ),
                    ),
                };
                if !ok {
                    let resp = tiny_http::Response::from_string("unauthorized")
                        .with_status_code(401)
                        .with_header(header_of("WWW-Authenticate", &challenge));
                    let _ = req.respond(resp);
                    continue;
                }
                let mut up = agent.get(&format!("http://{upstream}{url}"));
                if let Some(a) = header("Accept") {
                    up = up.set("Accept", &a);
                }
                let resp = match up.call() {
                    Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("gate: {e}"),
                };
                let status = resp.status();
                let ctype = resp.header("Content-Type").unwrap_or("").to_string();
                let mut body = Vec::new();
                resp.into_reader().read_to_end(&mut body).unwrap();
                if cut && url.contains("/blobs/") && body.len() > 1 << 20 {
                    cut = false;
                    let len = body.len();
                    body.truncate(len / 2);
                    let out = tiny_http::Response::new(
                        tiny_http::StatusCode(200),
                        vec![header_of("Connection", "close")],
                        &body[..],
                        Some(len),
                        None,
                    );
                    let _ = req.respond(out);
                    continue;
                }
                let mut out = tiny_http::Response::from_data(body).with_status_code(status);
                if !ctype.is_empty() {
                    out = out.with_header(header_of("Content-Type", &ctype));
                }
                let _ = req.respond(out);
            }
        });
        AuthGate {
            host,
            token_requests,
            server,
            handle: Some(handle),
        }
    }
}

impl Drop for AuthGate {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
