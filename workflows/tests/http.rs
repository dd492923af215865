//! The HTTP check action against the lab's ingress: 200 while the platform
//! is healthy, a clear retryable error while it answers 503 (after a
//! control-plane loss) and after the platform is redeployed 200 again; a
//! port where nothing listens and a server that never answers name the URL.

use std::time::Duration;

use std::sync::Arc;

use dr_orchestrator::{ActionCtx, SystemClock, TypedAction};
use dr_lab::lab::testing::TestLab;
use dr_workflows::actions::command::{CommandAction, CommandParams};
use dr_workflows::actions::http::{HttpCheckAction, HttpCheckOutput, HttpCheckParams, HttpMethod};

fn ctx() -> ActionCtx {
    ActionCtx::detached("http", Arc::new(SystemClock))
}

async fn check(params: HttpCheckParams) -> Result<HttpCheckOutput, dr_orchestrator::ActionError> {
    HttpCheckAction::new(params).run(&ctx()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_answers_200_when_healthy_and_503_is_a_clear_error() {
    let lab = TestLab::stub().unwrap();
    let url = lab.ingress_url();

    let head = check(HttpCheckParams::new(&url)).await.unwrap();
    assert_eq!((head.status, head.method), (200, HttpMethod::Head));
    assert!(head.latency_ms < 10_000);
    let get = check(HttpCheckParams::new(&url).method(HttpMethod::Get)).await.unwrap();
    assert_eq!(get.status, 200);

    lab.fault("control-plane-lost", None).unwrap();
    let err = check(HttpCheckParams::new(&url).method(HttpMethod::Get)).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains(&format!("GET {url} answered 503")), "{err}");
    assert!(err.message.contains("expected 200–399"), "{err}");
    // A wider range accepts it (e.g. a check that only wants an answer).
    assert_eq!(check(HttpCheckParams::new(&url).expect(200, 599)).await.unwrap().status, 503);

    // The guide's platform redeploy brings the ingress back.
    let deploy = CommandParams::new(lab.dir().join("platform/platform-deploy.sh")).cwd(lab.dir().join("platform"));
    CommandAction::new(deploy).run(&ctx()).await.unwrap();
    assert_eq!(check(HttpCheckParams::new(&url)).await.unwrap().status, 200);
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_error_naming_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let err = check(HttpCheckParams::new(&url).timeout(Duration::from_secs(5))).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains(&url) && err.message.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let started = std::time::Instant::now();
    let err = check(HttpCheckParams::new(&url).timeout(Duration::from_millis(300))).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains(&url) && err.message.contains("no answer within 0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn a_malformed_url_is_permanent() {
    let err = check(HttpCheckParams::new("http://exa mple/")).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("not a valid URL"), "{err}");
}
