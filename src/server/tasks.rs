//! The admin API's tasks: `GET /tasks`, `POST /tasks` (open one for an agent) and
//! `POST /tasks/{id}/end`. See [`crate::tasks`] for what a task is; agents open and end
//! their own at `/.keygate/tasks` on the data plane.

use super::decide::{audit_task, error, json, store_error, AdminBody};
use crate::gateway::Runtime;
use crate::store::StoreError;
use crate::telemetry::audit_log::AdminAction;
use http::{Response, StatusCode};
use serde::Deserialize;

/// The body of `POST /tasks/{id}/end`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndTaskBody {
    pub by: Option<String>,
}

/// Opens a task for `agent` (`by` opens it; `identity` is how they proved it).
pub async fn open(
    rt: &Runtime,
    path: &str,
    opening: crate::tasks::Opening,
    agent: &str,
    by: &str,
    identity: &'static str,
    via: &'static str,
) -> Response<AdminBody> {
    let gw = rt.current();
    if !gw.snapshot.agents.by_id.contains_key(agent) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("no agent {agent:?} in the configuration"),
        );
    }
    let now = rt.shared.clock.unix_millis();
    if rt.shared.tasks.open_count(agent, now) >= crate::tasks::MAX_OPEN_PER_AGENT {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_tasks",
            format!(
                "the agent already has {} open tasks: end one first",
                crate::tasks::MAX_OPEN_PER_AGENT
            ),
        );
    }
    let task = match crate::tasks::new_task(
        opening,
        agent,
        by,
        &gw.snapshot.tasks,
        |t| gw.tools.by_name.contains_key(t),
        now,
    ) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    if let Err(e) = rt.shared.store.open_task(&task).await {
        return store_error(e);
    }
    rt.shared.tasks.put(task.clone());
    audit_task(
        rt,
        path,
        &task,
        identity,
        AdminAction {
            action: "open_task",
            by: by.to_string(),
            reason: Some(task.purpose.clone()),
            agent: Some(task.agent_id.clone()),
            via: Some(via),
            ..Default::default()
        },
        201,
    );
    tracing::info!(task = %task.id, agent = %task.agent_id, by, "task opened");
    json(StatusCode::CREATED, crate::tasks::view(&task, now))
}

/// Ends task `id` (`by` ends it).
pub async fn end(
    rt: &Runtime,
    path: &str,
    id: &str,
    by: &str,
    identity: &'static str,
    via: &'static str,
) -> Response<AdminBody> {
    let now = rt.shared.clock.unix_millis();
    let by = match crate::tasks::text("by", by, 200) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "by is empty"),
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    let by = by.as_str();
    let (task, ended_now) = match rt.shared.store.end_task(id, by, now).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => {
            return error(StatusCode::NOT_FOUND, "not_found", "no such task")
        }
        Err(e) => return store_error(e),
    };
    rt.shared.tasks.put(task.clone());
    // What this replica issued for it is dropped and revoked now; other replicas do the
    // same when the change reaches them.
    crate::gateway::close_tasks(&rt.current());
    if ended_now {
        audit_task(
            rt,
            path,
            &task,
            identity,
            AdminAction {
                action: "end_task",
                by: by.to_string(),
                reason: None,
                agent: Some(task.agent_id.clone()),
                via: Some(via),
                ..Default::default()
            },
            200,
        );
        tracing::info!(task = %task.id, agent = %task.agent_id, by, "task ended");
    }
    let mut v = crate::tasks::view(&task, now);
    if let Some(o) = v.as_object_mut() {
        o.insert("already_ended".into(), (!ended_now).into());
    }
    json(StatusCode::OK, v)
}
