//! The authenticated control plane: rsupd's `--tcp` listener speaks only
//! mutual TLS, `--insecure-tcp` only on loopback (and says so), and the
//! Unix socket keeps its mode and group. Every handshake here is real: the
//! certificates are made in the test with rcgen (CA A signs rsupd's
//! certificate and the good client's; CA B, unknown to rsupd, signs an
//! intruder's), and rsupctl and the client library connect over 127.0.0.1.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rsup_client::{Client, Host, TlsFiles};
use rsup_tests::{
    Daemon, TempDir, bin_dir, busybox_rootfs, describe, free_loopback_addr, output_with_timeout,
    stderr, stdout, unique_name,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA: its certificate (PEM) and what it takes to sign with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-signed CA").pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) with one
    /// extended key usage; returns (certificate PEM, key PEM).
    fn sign(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test's PKI, in its own temporary directory.
struct Pki {
    _dir: TempDir,
    ca_a: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_a: TlsFiles,
    /// CA A for the server, but a client certificate from CA B.
    client_b: TlsFiles,
    /// A good client certificate, but trusting only CA B for the server.
    trusts_b: TlsFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new();
        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        };
        let a = Ca::new("rsup test CA A");
        let b = Ca::new("rsup test CA B");
        let (server, server_key) = a.sign(
            "rsupd",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = a.sign("rsupctl", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let (intruder, intruder_key) = b.sign("intruder", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let ca_a = write("ca-a.pem", &a.pem);
        let ca_b = write("ca-b.pem", &b.pem);
        let client_cert = write("client-a.pem", &client);
        let client_key = write("client-a-key.pem", &client_key);
        let files = |ca: &Path, cert: &Path, key: &Path| TlsFiles {
            ca: ca.to_owned(),
            cert: Some(cert.to_owned()),
            key: Some(key.to_owned()),
            server_name: None,
        };
        Pki {
            server_cert: write("server.pem", &server),
            server_key: write("server-key.pem", &server_key),
            client_a: files(&ca_a, &client_cert, &client_key),
            client_b: files(
                &ca_a,
                &write("client-b.pem", &intruder),
                &write("client-b-key.pem", &intruder_key),
            ),
            trusts_b: files(&ca_b, &client_cert, &client_key),
            ca_a,
            _dir: dir,
        }
    }

    /// rsupd's flags for `--tcp ADDR` with this PKI.
    fn daemon_args(&self, addr: &str) -> Vec<String> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--tcp".into(),
            addr.into(),
            "--tls-cert".into(),
            s(&self.server_cert),
            "--tls-key".into(),
            s(&self.server_key),
            "--tls-ca".into(),
            s(&self.ca_a),
        ]
    }
}

/// `rsupctl -H HOST [--tls* FILES] ARGS...` with no socket flag and none of
/// the connection variables from this environment.
fn ctl_at(host: &str, tls: Option<&TlsFiles>, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(bin_dir().join("rsupctl"));
    for var in [
        "RSUP_SOCKET",
        "RSUP_HOST",
        "RSUP_TLS_CA",
        "RSUP_TLS_CERT",
        "RSUP_TLS_KEY",
        "RSUP_TLS_SERVER_NAME",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["-H", host]);
    if let Some(tls) = tls {
        cmd.arg("--tlscacert").arg(&tls.ca);
        if let Some(cert) = &tls.cert {
            cmd.arg("--tlscert").arg(cert);
        }
        if let Some(key) = &tls.key {
            cmd.arg("--tlskey").arg(key);
        }
        if let Some(name) = &tls.server_name {
            cmd.args(["--tls-server-name", name]);
        }
    }
    cmd.args(args);
    output_with_timeout(cmd, CTL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn ctl_ok_at(host: &str, tls: Option<&TlsFiles>, args: &[&str]) -> String {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = ctl_at(host, tls, &args);
    assert!(
        out.status.success(),
        "rsupctl -H {host} {args:?}: {}",
        describe(&out)
    );
    stdout(&out)
}

/// `rsupctl -H HOST run --rootfs <busybox> --name NAME -- echo WORD`, which
/// must succeed; returns its trimmed output.
fn run_echo_at(host: &str, tls: Option<&TlsFiles>, name: &str, word: &str) -> String {
    let rootfs = busybox_rootfs().to_string_lossy().into_owned();
    let args = [
        "run", "--rootfs", &rootfs, "--name", name, "--", "echo", word,
    ];
    ctl_ok_at(host, tls, &args).trim().to_owned()
}

/// A refused rsupctl: non-zero exit, nothing on stdout, and an error line
/// that names the TLS failure; returns stderr.
fn assert_refused(out: &Output, what: &str, any_of: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "{what}: rsupctl succeeded: {}",
        describe(out)
    );
    assert!(stdout(out).trim().is_empty(), "{what}: {}", describe(out));
    assert!(
        err.starts_with("error: ") && any_of.iter().any(|w| err.contains(w)),
        "{what}: want one of {any_of:?} in stderr: {}",
        describe(out)
    );
    eprintln!("{what}: {}", err.trim_end());
    err
}

/// Health over `client`'s channel, as any gRPC client would ask.
async fn health(client: &Client) -> Result<i32, tonic::Status> {
    let mut health = HealthClient::new(client.channel());
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

/// The full chain of an error, for assertions on its cause.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_serves_rsupctl_and_the_client_library() {
    let pki = Pki::new();
    let addr = free_loopback_addr();
    let d = Daemon::start_with_args(&pki.daemon_args(&addr.to_string())).await;
    let host = format!("tcp://{addr}");
    let tls = Some(&pki.client_a);

    // rsupctl: a real container, run, listed, removed, all over TCP.
    let name = unique_name("tls");
    let rootfs = busybox_rootfs();
    assert_eq!(run_echo_at(&host, tls, &name, "over-mtls"), "over-mtls");
    let ps = ctl_ok_at(&host, tls, &["ps", "-a", "--format", "json"]);
    assert!(ps.contains(&format!("\"{name}\"")), "{ps}");
    let created = unique_name("tls");
    let id = ctl_ok_at(
        &host,
        tls,
        &[
            "create",
            "--rootfs",
            &rootfs.to_string_lossy(),
            "--name",
            &created,
            "--",
            "sleep",
            "30",
        ],
    );
    assert!(!id.trim().is_empty());
    ctl_ok_at(&host, tls, &["start", &created]);
    ctl_ok_at(&host, tls, &["rm", "-f", &created, &name]);

    // The same daemon over its Unix socket sees what TCP did.
    assert!(d.ps_json().iter().all(|c| c["Names"] != name.as_str()));

    // The certificate also names "localhost": --tls-server-name checks it.
    let by_name = TlsFiles {
        server_name: Some("localhost".into()),
        ..pki.client_a.clone()
    };
    ctl_ok_at(&host, Some(&by_name), &["info"]);

    // The typed client library: health, and a container made over TCP.
    let target: Host = host.parse().expect("tcp host");
    let client = Client::connect_host(&target, Some(&pki.client_a))
        .await
        .expect("mutual TLS connect");
    assert_eq!(
        health(&client).await.expect("health over mutual TLS"),
        tonic_health::ServingStatus::Serving as i32
    );
    let lib_name = unique_name("tls");
    let c = client
        .create(d.spec(&lib_name, &["true"]))
        .await
        .expect("create over mutual TLS");
    let listed = client.list(true).await.expect("list over mutual TLS");
    assert!(listed.iter().any(|l| l.id == c.id), "{listed:?}");
    client
        .remove(&c.id, true)
        .await
        .expect("rm over mutual TLS");

    // A graceful stop is not held up by a client on TCP, even one that is
    // following the event stream: SIGTERM ends rsupd cleanly in time.
    let mut events = client
        .events(Default::default())
        .await
        .expect("events over mutual TLS");
    let mut d = d;
    d.stop();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = events.message().await {}
    })
    .await
    .expect("the event stream ends when rsupd stops");
    d.start_again().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_certificate_of_the_ca_are_refused() {
    let pki = Pki::new();
    let addr = free_loopback_addr();
    let _d = Daemon::start_with_args(&pki.daemon_args(&addr.to_string())).await;
    let host = format!("tcp://{addr}");
    let ps = [OsStr::new("ps")];

    // A certificate from CA B: the server refuses it during the handshake.
    let out = ctl_at(&host, Some(&pki.client_b), &ps);
    assert_refused(&out, "client certificate from CA B", &["UnknownCA"]);
    let target: Host = host.parse().expect("tcp host");
    let err = Client::connect_host(&target, Some(&pki.client_b))
        .await
        .expect_err("a CA B client certificate must be refused");
    assert!(chain(&err).contains("UnknownCA"), "{}", chain(&err));

    // No client certificate at all (TLS, trusting the server): refused.
    let no_cert = TlsFiles {
        cert: None,
        key: None,
        ..pki.client_a.clone()
    };
    let out = ctl_at(&host, Some(&no_cert), &ps);
    assert_refused(&out, "no client certificate", &["CertificateRequired"]);
    let err = Client::connect_host(&target, Some(&no_cert))
        .await
        .expect_err("a client without a certificate must be refused");
    assert!(
        chain(&err).contains("CertificateRequired"),
        "{}",
        chain(&err)
    );

    // The same with tonic's own TLS client: the handshake is refused, no
    // call gets through.
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(fs::read(&pki.ca_a).expect("ca")))
                .domain_name("127.0.0.1"),
        )
        .expect("tls config");
    let outcome = match endpoint.connect().await {
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
            .map_err(|e| chain(&e)),
        Err(e) => Err(chain(&e)),
    };
    outcome.expect_err("tonic without a client certificate must be refused");

    // Plaintext HTTP/2 to the TLS port: no answer either.
    let out = ctl_at(&host, None, &ps);
    assert!(
        !out.status.success(),
        "plaintext to --tcp: {}",
        describe(&out)
    );

    // A certificate without its key: refused by rsupctl before connecting.
    let no_key = TlsFiles {
        key: None,
        ..pki.client_a.clone()
    };
    let out = ctl_at(&host, Some(&no_key), &ps);
    assert_refused(&out, "--tlscert without --tlskey", &["go together"]);

    // A missing file is named.
    let missing = TlsFiles {
        key: Some(PathBuf::from("/nonexistent/client-key.pem")),
        ..pki.client_a.clone()
    };
    let out = ctl_at(&host, Some(&missing), &ps);
    assert_refused(&out, "missing key", &["/nonexistent/client-key.pem"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_that_trusts_another_ca_refuses_the_server() {
    let pki = Pki::new();
    let addr = free_loopback_addr();
    let _d = Daemon::start_with_args(&pki.daemon_args(&addr.to_string())).await;
    let host = format!("tcp://{addr}");
    let out = ctl_at(&host, Some(&pki.trusts_b), &[OsStr::new("ps")]);
    let err = assert_refused(
        &out,
        "server certificate from a CA the client does not trust",
        &["UnknownIssuer", "invalid peer certificate"],
    );
    assert!(
        err.contains(&format!("cannot connect to rsupd at {host}")),
        "{err}"
    );
    let target: Host = host.parse().expect("tcp host");
    let err = Client::connect_host(&target, Some(&pki.trusts_b))
        .await
        .expect_err("the server's certificate is from an untrusted CA");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));

    // The certificate names 127.0.0.1 and localhost, nothing else.
    let wrong_name = TlsFiles {
        server_name: Some("rsup.example".into()),
        ..pki.client_a.clone()
    };
    let out = ctl_at(&host, Some(&wrong_name), &[OsStr::new("ps")]);
    assert_refused(
        &out,
        "wrong server name",
        &["NotValidForName", "not valid for"],
    );
}

/// Runs rsupd with `args` (it must refuse to start) and returns its output.
fn rsupd_refusing(args: &[&str]) -> Output {
    let dir = TempDir::new();
    let mut cmd = Command::new(bin_dir().join("rsupd"));
    for var in [
        "RSUP_TCP",
        "RSUP_INSECURE_TCP",
        "RSUP_TLS_SERVER_CERT",
        "RSUP_TLS_SERVER_KEY",
        "RSUP_TLS_CLIENT_CA",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RSUP_METRICS_ADDR", "")
        .arg("--socket")
        .arg(dir.path().join("rsupd.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args);
    let out = output_with_timeout(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.status.success(),
        "rsupd {args:?} started: {}",
        describe(&out)
    );
    for made in ["rsupd.sock", "state"] {
        assert!(
            !dir.path().join(made).exists(),
            "rsupd {args:?} created {made}"
        );
    }
    out
}

#[test]
fn tcp_without_certificates_stops_rsupd_at_start() {
    let addr = free_loopback_addr().to_string();
    let out = rsupd_refusing(&["--tcp", &addr]);
    let err = stderr(&out);
    assert!(
        err.contains("--tcp serves only mutual TLS")
            && err.contains("missing: --tls-cert, --tls-key, --tls-ca"),
        "{}",
        describe(&out)
    );

    let pki = Pki::new();
    let out = rsupd_refusing(&[
        "--tcp",
        &addr,
        "--tls-cert",
        &pki.server_cert.to_string_lossy(),
        "--tls-key",
        "/nonexistent/key.pem",
        "--tls-ca",
        &pki.ca_a.to_string_lossy(),
    ]);
    assert!(
        stderr(&out).contains("--tls-key /nonexistent/key.pem"),
        "{}",
        describe(&out)
    );

    // PEM, but not a key: refused before the state dir or socket is made.
    let out = rsupd_refusing(&[
        "--tcp",
        &addr,
        "--tls-cert",
        &pki.server_cert.to_string_lossy(),
        "--tls-key",
        &pki.ca_a.to_string_lossy(),
        "--tls-ca",
        &pki.ca_a.to_string_lossy(),
    ]);
    eprintln!("certificate as key: {}", stderr(&out).trim_end());
    assert!(
        stderr(&out).contains("--tcp: loading --tls-cert, --tls-key and --tls-ca"),
        "{}",
        describe(&out)
    );
}

#[test]
fn insecure_tcp_is_refused_off_loopback() {
    let port = free_loopback_addr().port();
    for addr in [
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("localhost:{port}"),
    ] {
        let out = rsupd_refusing(&["--insecure-tcp", &addr]);
        let err = stderr(&out);
        assert!(
            err.contains("--insecure-tcp")
                && (err.contains("loopback") || err.contains("host names")),
            "{addr}: {}",
            describe(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_tcp_on_loopback_serves_and_warns() {
    let addr = free_loopback_addr();
    let d = Daemon::start_with_args(&["--insecure-tcp", &addr.to_string()]).await;
    let host = format!("tcp://{addr}");
    let name = unique_name("tls");
    assert_eq!(run_echo_at(&host, None, &name, "plain"), "plain");
    let target: Host = host.parse().expect("tcp host");
    let client = Client::connect_host(&target, None)
        .await
        .expect("plaintext connect");
    assert!(
        client
            .list(true)
            .await
            .expect("list")
            .iter()
            .any(|c| c.name == name)
    );
    ctl_ok_at(&host, None, &["rm", "-f", &name]);
    let log = fs::read_to_string(d.log_path()).expect("rsupd log");
    let warning = log
        .lines()
        .find(|l| l.contains("WITHOUT TLS or authentication"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains(&addr.to_string()),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_keeps_its_mode_and_group_beside_tcp() {
    let pki = Pki::new();
    let tcp = free_loopback_addr().to_string();
    let plain = free_loopback_addr().to_string();
    // A group nobody else uses: the socket's group is exactly the one given.
    let gid = "64123";
    let mut args = pki.daemon_args(&tcp);
    args.extend([
        "--insecure-tcp".into(),
        plain,
        "--socket-group".into(),
        gid.into(),
    ]);
    let d = Daemon::start_with_args(&args).await;
    let meta = fs::metadata(d.socket()).expect("stat socket");
    assert_eq!(meta.mode() & 0o7777, 0o660, "mode {:o}", meta.mode());
    assert_eq!(meta.gid().to_string(), gid);
    assert_eq!(meta.uid(), 0);
    // And it still serves.
    assert_eq!(
        health(d.client())
            .await
            .expect("health over the Unix socket"),
        tonic_health::ServingStatus::Serving as i32
    );
}
