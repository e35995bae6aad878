//! The system lines of groups: for every group change the threads
//! projection applied, one `system` message in the group, sent by whoever
//! made the change, pushed to the members. A process manager, so each line
//! is written exactly once: its `unique_id` comes from the change's event.

use crate::journal::{StoreError, Writes};
use crate::processes::{ProcessError, ProcessManager, Trigger};
use crate::Journal;
use async_trait::async_trait;
use imlog_events::{MessageKind, MessagePosted, Topic, UserId};
use imlog_projections::threads::GroupChangeRow;
use std::collections::HashMap;

pub struct GroupLines;

#[async_trait]
impl ProcessManager for GroupLines {
    fn name(&self) -> &'static str {
        "group_lines"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Threads]
    }

    async fn react(&self, journal: &Journal, trigger: &Trigger<'_>) -> Result<(), ProcessError> {
        if !trigger.envelope.event.type_name().starts_with("group.") {
            return Ok(());
        }
        let mut writes = Writes::default();
        writes.record(Topic::Threads, trigger.record.position());
        journal.settle(&mut writes, &[Topic::Threads]).await?;
        let read = journal.read();
        let Some(change) = read
            .group_change(trigger.record.offset)
            .await
            .map_err(StoreError::from)?
        else {
            // Refused by the permission table at its point in the log.
            return Ok(());
        };
        let mut mentioned = change.subjects.clone();
        mentioned.push(change.actor);
        let names: HashMap<UserId, String> = read
            .user_names(&mentioned)
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .collect();
        let line = MessagePosted {
            thread_id: change.thread_id,
            sender_id: change.actor,
            unique_id: format!("group-{}-line", trigger.envelope.meta.event_id.simple()),
            kind: MessageKind::System,
            body: describe(&change, &names),
            // Every member as of this change (the fan-out pushes system lines
            // to their actor too).
            recipients: vec![],
            members_as_of: Some(trigger.record.offset + 1),
            media: None,
        };
        for result in journal
            .append_all(&mut writes, &[trigger.step("line", line)])
            .await
        {
            result?;
        }
        Ok(())
    }
}

/// The line for a change, naming people by their user names.
fn describe(change: &GroupChangeRow, names: &HashMap<UserId, String>) -> String {
    let name = |id: &UserId| {
        names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"))
    };
    let actor = name(&change.actor);
    let subjects = change.subjects.iter().map(name).collect::<Vec<_>>();
    let listed = if subjects.len() > 5 {
        format!(
            "{} and {} others",
            subjects[..5].join(", "),
            subjects.len() - 5
        )
    } else {
        subjects.join(", ")
    };
    let detail = change.detail.clone().unwrap_or_default();
    match change.kind.as_str() {
        "created" if subjects.is_empty() => format!("{actor} created the group “{detail}”"),
        "created" => format!("{actor} created the group “{detail}” with {listed}"),
        "added" => format!("{actor} added {listed}"),
        "removed" => format!("{actor} removed {listed}"),
        "left" => format!("{actor} left"),
        "renamed" => format!("{actor} renamed the group to “{detail}”"),
        "muted" => format!("{actor} muted {listed} until {detail}"),
        "unmuted" => format!("{actor} unmuted {listed}"),
        "role_changed" => format!("{actor} made {listed} {}", a_role(&detail)),
        "ownership_transferred" => format!("{actor} made {listed} the owner"),
        other => format!("{actor}: {other} {listed}"),
    }
}

fn a_role(role: &str) -> &'static str {
    match role {
        "admin" => "an admin",
        _ => "a member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imlog_events::ThreadId;

    #[test]
    fn lines_name_people() {
        let names: HashMap<UserId, String> =
            (1..=8).map(|i| (UserId::new(i), format!("u{i}"))).collect();
        let change = |kind: &str, subjects: Vec<i64>, detail: Option<&str>| GroupChangeRow {
            thread_id: ThreadId::new(1),
            actor: UserId::new(1),
            kind: kind.into(),
            subjects: subjects.into_iter().map(UserId::new).collect(),
            detail: detail.map(str::to_owned),
        };
        assert_eq!(
            describe(&change("created", vec![2, 3], Some("hikers")), &names),
            "u1 created the group “hikers” with u2, u3"
        );
        assert_eq!(
            describe(&change("added", (2..=8).collect(), None), &names),
            "u1 added u2, u3, u4, u5, u6 and 2 others"
        );
        assert_eq!(
            describe(&change("role_changed", vec![2], Some("admin")), &names),
            "u1 made u2 an admin"
        );
        assert_eq!(describe(&change("left", vec![1], None), &names), "u1 left");
    }
}
