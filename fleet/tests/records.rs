//! The build records against moto's DynamoDB: the conditional claim, heartbeats, stops,
//! invalid jobs, build numbers, listing and the BatchGetBuilds shape.

mod common;

use std::time::{Duration, SystemTime};

use buildagent_fleet::job::Job;
use buildagent_fleet::record::{
    BuildRecord, BuildStatus, Claim, Finish, LogsRecord, PhaseRecord, RecordError, RecordStore,
    StopOutcome,
};

const LONG: Duration = Duration::from_secs(600);

async fn queued(store: &RecordStore, project: &str) -> BuildRecord {
    let job = Job::new(project);
    let number = store.next_build_number(project).await.unwrap();
    let record = BuildRecord::queued(&job.id, project, number, Some(job.to_json()));
    store.create_queued(&record).await.unwrap();
    record
}

fn refused(claim: Claim) -> BuildRecord {
    match claim {
        Claim::Refused { record } => *record,
        Claim::Claimed { attempt, .. } => {
            panic!("claimed as attempt {attempt}, expected a refusal")
        }
    }
}

/// The attempt a claim won (panics on a refusal).
fn claimed(claim: Claim) -> u32 {
    match claim {
        Claim::Claimed { attempt, .. } => attempt,
        Claim::Refused { record } => panic!("refused, the record is {}", record.status),
    }
}

#[tokio::test]
async fn a_queued_build_is_claimed_once() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    let claim = store.claim(&record.id, "w1", LONG).await.unwrap();
    let Claim::Claimed {
        attempt: 1,
        record: read,
    } = claim
    else {
        panic!("{claim:?}")
    };
    // The claim hands over the record it read (the worker needs its number and times).
    assert_eq!(
        (&read.id, read.build_number),
        (&record.id, record.build_number)
    );
    assert_eq!(read.status, BuildStatus::Queued);
    let got = store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::InProgress);
    assert_eq!(got.worker.as_deref(), Some("w1"));
    assert_eq!(got.attempt, 1);
    assert_eq!(got.current_phase, "PROVISIONING");
    assert!(got.start_time.is_some() && got.heartbeat_at.is_some());

    // A redelivery, on another worker or the same one: refused while the first is alive.
    for worker in ["w2", "w1"] {
        let seen = refused(store.claim(&record.id, worker, LONG).await.unwrap());
        assert_eq!(seen.worker.as_deref(), Some("w1"));
        assert_eq!(seen.attempt, 1);
    }

    // Finished: refused, even when the claim is long stale.
    store
        .finish(&record.id, "w1", &Finish::new(BuildStatus::Succeeded))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = refused(store.claim(&record.id, "w2", Duration::ZERO).await.unwrap());
    assert_eq!(seen.status, BuildStatus::Succeeded);
    assert_eq!(seen.current_phase, "COMPLETED");
    assert!(seen.end_time.is_some());
}

#[tokio::test]
async fn two_workers_claiming_at_once_one_wins() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    let (a, b) = tokio::join!(
        store.claim(&record.id, "w1", LONG),
        store.claim(&record.id, "w2", LONG)
    );
    let claimed = [a.unwrap(), b.unwrap()]
        .into_iter()
        .filter(|c| matches!(c, Claim::Claimed { .. }))
        .count();
    assert_eq!(claimed, 1);
}

#[tokio::test]
async fn a_stale_build_is_taken_over_as_attempt_two_and_the_old_worker_loses_its_claim() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    assert_eq!(
        claimed(store.claim(&record.id, "w1", LONG).await.unwrap()),
        1
    );
    // Fresh: refused.
    refused(store.claim(&record.id, "w2", LONG).await.unwrap());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        claimed(
            store
                .claim(&record.id, "w2", Duration::from_millis(10))
                .await
                .unwrap()
        ),
        2
    );
    let got = store.get(&record.id).await.unwrap().unwrap();
    assert_eq!((got.attempt, got.worker.as_deref()), (2, Some("w2")));
    assert_eq!(got.history.len(), 1);
    assert_eq!(got.history[0].attempt, 1);
    assert_eq!(got.history[0].worker, "w1");
    assert_eq!(
        got.history[0].outcome,
        "attempt 1 on worker w1 lost its lease"
    );

    // The first worker can no longer write anything.
    assert_eq!(
        store.heartbeat(&record.id, "w1").await,
        Err(RecordError::LostClaim(record.id.clone()))
    );
    assert_eq!(
        store.update_phases(&record.id, "w1", "BUILD", &[]).await,
        Err(RecordError::LostClaim(record.id.clone()))
    );
    assert_eq!(
        store
            .finish(&record.id, "w1", &Finish::new(BuildStatus::Failed))
            .await,
        Err(RecordError::LostClaim(record.id.clone()))
    );
    // The second still can.
    assert!(
        !store
            .heartbeat(&record.id, "w2")
            .await
            .unwrap()
            .stop_requested
    );
    let json = store
        .get(&record.id)
        .await
        .unwrap()
        .unwrap()
        .to_codebuild_json("us-east-1", "000000000000");
    assert_eq!(json["buildagent"]["attempt"], 2);
    assert_eq!(json["buildagent"]["history"][0]["worker"], "w1");
}

#[tokio::test]
async fn heartbeats_report_a_stop_request() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    store.claim(&record.id, "w1", LONG).await.unwrap();
    assert!(
        !store
            .heartbeat(&record.id, "w1")
            .await
            .unwrap()
            .stop_requested
    );
    assert_eq!(
        store.request_stop(&record.id).await,
        Ok(StopOutcome::Requested)
    );
    assert!(
        store
            .heartbeat(&record.id, "w1")
            .await
            .unwrap()
            .stop_requested
    );
    let got = store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::InProgress);
    assert!(got.stop_requested);
    let mut fin = Finish::new(BuildStatus::Stopped);
    fin.reason = Some("stopped by request".into());
    store.finish(&record.id, "w1", &fin).await.unwrap();
    let got = store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::Stopped);
    assert_eq!(got.status_reason.as_deref(), Some("stopped by request"));
    // Finished: a stop is refused with the status.
    assert_eq!(
        store.request_stop(&record.id).await,
        Err(RecordError::AlreadyFinished {
            id: record.id.clone(),
            status: BuildStatus::Stopped
        })
    );
}

#[tokio::test]
async fn a_queued_build_stops_at_once_and_is_never_claimed() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    assert_eq!(
        store.request_stop(&record.id).await,
        Ok(StopOutcome::Stopped)
    );
    let got = store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::Stopped);
    assert_eq!(got.status_reason.as_deref(), Some("stopped by request"));
    assert_eq!(got.current_phase, "COMPLETED");
    assert!(got.end_time.is_some());
    let seen = refused(store.claim(&record.id, "w1", LONG).await.unwrap());
    assert_eq!(seen.status, BuildStatus::Stopped);
    assert_eq!(
        store.request_stop("app:nope").await,
        Err(RecordError::NotFound("app:nope".into()))
    );
    assert_eq!(
        store.claim("app:nope", "w1", LONG).await,
        Err(RecordError::NotFound("app:nope".into()))
    );
}

#[tokio::test]
async fn a_stale_build_whose_stop_was_asked_ends_stopped() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    store.claim(&record.id, "w1", LONG).await.unwrap();
    store.request_stop(&record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let seen = refused(
        store
            .claim(&record.id, "w2", Duration::from_millis(10))
            .await
            .unwrap(),
    );
    assert_eq!(seen.status, BuildStatus::Stopped);
    assert_eq!(seen.history.len(), 1);
}

#[tokio::test]
async fn invalid_jobs_are_recorded_as_failed() {
    let store = common::store().await;
    // A queued record whose message turned out not to be valid.
    let record = queued(&store, "app").await;
    let id = store
        .fail_invalid(
            Some(&record.id),
            None,
            "job: missing required field `projectName`",
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(id, record.id);
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::Failed);
    assert_eq!(got.build_number, record.build_number);
    assert_eq!(got.project, "app");
    assert_eq!(
        got.status_reason.as_deref(),
        Some("job: missing required field `projectName`")
    );
    assert_eq!(got.job.as_deref(), Some("{}"));

    // No record yet, no id: a new one.
    let id = store
        .fail_invalid(None, None, "job: not JSON", "garbage")
        .await
        .unwrap();
    assert!(id.starts_with("invalid:"), "{id}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::Failed);
    assert_eq!(got.job.as_deref(), Some("garbage"));
    assert_eq!(got.build_number, 0);

    // A running build is left alone.
    let running = queued(&store, "app").await;
    store.claim(&running.id, "w1", LONG).await.unwrap();
    store
        .fail_invalid(Some(&running.id), Some("app"), "job: bad", "{}")
        .await
        .unwrap();
    let got = store.get(&running.id).await.unwrap().unwrap();
    assert_eq!(got.status, BuildStatus::InProgress);
}

#[tokio::test]
async fn build_numbers_count_per_project() {
    let store = common::store().await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        numbers.push(store.next_build_number("app").await.unwrap());
    }
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(store.next_build_number("other").await.unwrap(), 1);
}

#[tokio::test]
async fn creating_an_existing_id_fails() {
    let store = common::store().await;
    let record = queued(&store, "app").await;
    let err = store.create_queued(&record).await.unwrap_err();
    assert!(
        err.to_string().contains("already exists") && err.to_string().contains(store.table()),
        "{err}"
    );
}

#[tokio::test]
async fn lists_filter_by_project_and_status_newest_first() {
    let store = common::store().await;
    let a1 = queued(&store, "a").await;
    let a2 = queued(&store, "a").await;
    let b1 = queued(&store, "b").await;
    store.claim(&a2.id, "w1", LONG).await.unwrap();
    let ids = |records: Vec<BuildRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(None, None).await.unwrap()),
        [b1.id.clone(), a2.id.clone(), a1.id.clone()]
    );
    assert_eq!(
        ids(store.list(Some("a"), None).await.unwrap()),
        [a2.id.clone(), a1.id.clone()]
    );
    assert_eq!(
        ids(store.list(None, Some(BuildStatus::Queued)).await.unwrap()),
        [b1.id.clone(), a1.id.clone()]
    );
    assert_eq!(
        ids(store
            .list(Some("a"), Some(BuildStatus::InProgress))
            .await
            .unwrap()),
        [a2.id]
    );
    assert!(store.list(Some("c"), None).await.unwrap().is_empty());
}

#[tokio::test]
async fn get_many_returns_the_existing_in_order() {
    let store = common::store().await;
    let a = queued(&store, "a").await;
    let b = queued(&store, "b").await;
    let got = store
        .get_many(&[b.id.clone(), "x:missing".into(), a.id.clone(), b.id.clone()])
        .await
        .unwrap();
    let ids: Vec<_> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [b.id.as_str(), a.id.as_str()]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    // The per-project counters are no builds.
    assert_eq!(store.get("counter#a").await.unwrap(), None);
    assert!(store
        .get_many(&["counter#a".into()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get("x:missing").await.unwrap(), None);
}

#[tokio::test]
async fn records_have_batch_get_builds_shape() {
    let store = common::store().await;
    let mut job = Job::new("app");
    job.source_location_override = Some("s3://bucket/sources/x.zip".into());
    let number = store.next_build_number("app").await.unwrap();
    let record = BuildRecord::queued(&job.id, "app", number, Some(job.to_json()));
    store.create_queued(&record).await.unwrap();

    let json = store
        .get(&job.id)
        .await
        .unwrap()
        .unwrap()
        .to_codebuild_json("eu-west-1", "123456789012");
    assert_eq!(json["id"], job.id.as_str());
    assert_eq!(
        json["arn"],
        format!("arn:aws:codebuild:eu-west-1:123456789012:build/{}", job.id)
    );
    assert_eq!(json["buildNumber"], 1);
    assert_eq!(json["buildStatus"], "QUEUED");
    assert_eq!(json["currentPhase"], "QUEUED");
    assert_eq!(json["buildComplete"], false);
    assert_eq!(json["source"]["location"], "s3://bucket/sources/x.zip");
    assert_eq!(json["source"]["type"], "S3");
    let phases = json["phases"].as_array().unwrap();
    assert_eq!(phases[0]["phaseType"], "SUBMITTED");
    assert_eq!(phases[0]["phaseStatus"], "SUCCEEDED");
    assert_eq!(phases[1]["phaseType"], "QUEUED");
    assert!(phases[1].get("phaseStatus").is_none());

    // Run and finish it.
    store.claim(&job.id, "w1", LONG).await.unwrap();
    store
        .set_logs(
            &job.id,
            "w1",
            &LogsRecord::cloudwatch("eu-west-1", "/aws/codebuild/app", job.uuid()),
        )
        .await
        .unwrap();
    let start = SystemTime::now();
    let phase = |kind: &str, status: &str| PhaseRecord {
        phase_type: kind.into(),
        phase_status: Some(status.into()),
        start_time: start,
        end_time: Some(start + Duration::from_millis(2500)),
        contexts: if status == "FAILED" {
            vec![(
                "COMMAND_EXECUTION_ERROR".into(),
                "Error while executing command: false. Reason: exit status 1".into(),
            )]
        } else {
            Vec::new()
        },
    };
    store
        .update_phases(
            &job.id,
            "w1",
            "BUILD",
            &[phase("DOWNLOAD_SOURCE", "SUCCEEDED")],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&job.id).await.unwrap().unwrap().current_phase,
        "BUILD"
    );
    let mut fin = Finish::new(BuildStatus::Failed);
    fin.reason = Some("BUILD failed".into());
    fin.phases = vec![
        phase("DOWNLOAD_SOURCE", "SUCCEEDED"),
        phase("BUILD", "FAILED"),
    ];
    fin.exported = vec![("VERSION".into(), "1.2".into())];
    fin.artifacts = Some(serde_json::json!({"location": "arn:aws:s3:::out/app"}));
    store.finish(&job.id, "w1", &fin).await.unwrap();

    let json = store
        .get(&job.id)
        .await
        .unwrap()
        .unwrap()
        .to_codebuild_json("eu-west-1", "123456789012");
    assert_eq!(json["buildStatus"], "FAILED");
    assert_eq!(json["currentPhase"], "COMPLETED");
    assert_eq!(json["buildComplete"], true);
    assert!(json["endTime"].as_str().unwrap().ends_with('Z'));
    assert!(json["startTime"].as_str().unwrap().contains('T'));
    let phases = json["phases"].as_array().unwrap();
    let types: Vec<_> = phases
        .iter()
        .map(|p| p["phaseType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SUBMITTED", "QUEUED", "DOWNLOAD_SOURCE", "BUILD"]);
    assert_eq!(phases[1]["phaseStatus"], "SUCCEEDED");
    let build = &phases[3];
    assert_eq!(build["phaseStatus"], "FAILED");
    assert_eq!(build["durationInSeconds"], 2);
    assert_eq!(
        build["contexts"][0]["statusCode"],
        "COMMAND_EXECUTION_ERROR"
    );
    assert!(build["contexts"][0]["message"]
        .as_str()
        .unwrap()
        .contains("false"));
    for field in ["startTime", "endTime"] {
        assert!(build[field].as_str().unwrap().ends_with('Z'), "{field}");
    }
    assert_eq!(json["logs"]["groupName"], "/aws/codebuild/app");
    assert_eq!(json["logs"]["streamName"], job.uuid());
    assert!(json["logs"]["deepLink"]
        .as_str()
        .unwrap()
        .starts_with("https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1"));
    assert_eq!(json["artifacts"]["location"], "arn:aws:s3:::out/app");
    assert_eq!(
        json["exportedEnvironmentVariables"],
        serde_json::json!([{"name": "VERSION", "value": "1.2"}])
    );
    assert_eq!(json["buildagent"]["statusReason"], "BUILD failed");
    assert_eq!(json["buildagent"]["worker"], "w1");
}

#[tokio::test]
async fn a_missing_table_is_named() {
    let client = aws_sdk_dynamodb::Client::new(&common::sdk_config());
    let table = common::unique("missing");
    let store = RecordStore::new(client, table.clone());
    assert_eq!(
        store.get("app:x").await,
        Err(RecordError::NoTable(table.clone()))
    );
    assert_eq!(
        store.list(None, None).await,
        Err(RecordError::NoTable(table.clone()))
    );
    let err = store.next_build_number("app").await.unwrap_err();
    assert!(err.to_string().contains(&table), "{err}");
}

#[tokio::test]
async fn idempotency_tokens_give_the_first_build_or_a_mismatch() {
    let store = common::store().await;
    let valid = Duration::from_secs(300);
    assert_eq!(
        store.reserve_token("t1", "app:1", "request", valid).await,
        Ok(None)
    );
    assert_eq!(
        store.reserve_token("t1", "app:2", "request", valid).await,
        Ok(Some("app:1".into()))
    );
    assert_eq!(
        store.reserve_token("t1", "app:3", "other", valid).await,
        Err(RecordError::TokenMismatch {
            token: "t1".into(),
            build: "app:1".into()
        })
    );
    // Expired: the token is free again.
    assert_eq!(
        store
            .reserve_token("t2", "app:4", "a", Duration::ZERO)
            .await,
        Ok(None)
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.reserve_token("t2", "app:5", "b", valid).await,
        Ok(None)
    );
    // Tokens are no builds.
    assert!(store.list(None, None).await.unwrap().is_empty());
    assert_eq!(store.get("token#t1").await.unwrap(), None);
}
