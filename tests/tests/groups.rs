//! Group threads end to end through the real protocol, on both log
//! backends: creation, membership, roles and the permission table, mutes,
//! system lines, fan-out to members without member lists in the sends, and
//! a group of 10,000 members.

use imlog_protocol::{GroupRole, MessageKind, MessageView, Request};
use imlog_tests::{
    on_backends, push_matching, Backend, Client, MessageId, Push, TestApp, ThreadId, UserId,
};
use std::time::{Duration, Instant};

on_backends! {
    a_group_lives_through_every_change_with_its_system_lines => lifecycle;
    the_permission_table_is_enforced_with_stable_codes => permissions;
    a_group_of_ten_thousand_members_works => ten_thousand;
}

async fn message_push(client: &mut Client, body: &str) -> MessageView {
    let want = body.to_owned();
    match push_matching(client, |p| matches!(p, Push::Message(m) if m.body == want)).await {
        Push::Message(m) => m,
        _ => unreachable!(),
    }
}

/// No push of a message with `body` arrives within a while.
async fn no_message_push(client: &mut Client, body: &str) {
    let deadline = Instant::now() + Duration::from_millis(700);
    while let Some(p) = client
        .next_push(deadline.saturating_duration_since(Instant::now()))
        .await
        .expect("push")
    {
        if let Push::Message(m) = &p {
            assert_ne!(m.body, body, "a push that should not have come");
        }
    }
}

/// The thread's system lines, once there are at least `n`.
async fn system_lines(client: &mut Client, thread: ThreadId, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines: Vec<String> = client
            .sync_all_messages(thread, MessageId::default())
            .await
            .expect("sync")
            .into_iter()
            .filter(|m| m.kind == MessageKind::System)
            .map(|m| m.body)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn role_of(members: &imlog_protocol::Page<imlog_protocol::MemberView>, user: UserId) -> GroupRole {
    members
        .items
        .iter()
        .find(|m| m.user.user_id == user)
        .map(|m| m.role)
        .expect("a member")
}

async fn lifecycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, alice_id, _) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;
    let (mut carol, carol_id, _) = app.user("carol").await;
    let (mut dave, dave_id, _) = app.user("dave").await;

    let group = alice
        .create_group("hikers", &[bob_id, carol_id, bob_id])
        .await
        .expect("create");
    for member in [&mut bob, &mut carol] {
        let push = push_matching(member, |p| matches!(p, Push::Thread { .. })).await;
        assert_eq!(
            push,
            Push::Thread {
                thread_id: group,
                kind: imlog_protocol::ThreadKind::Group,
                name: Some("hikers".into())
            }
        );
    }
    // The system line is in Alice's name, yet hers too: her devices learn of
    // it only from this push.
    let line = push_matching(
        &mut alice,
        |p| matches!(p, Push::Message(m) if m.kind == MessageKind::System),
    )
    .await;
    assert!(
        matches!(line, Push::Message(m) if m.thread_id == group && m.body.contains("created the group"))
    );
    let members = alice.members(group).await.expect("members");
    assert_eq!(members.items.len(), 3, "duplicates are one member");
    assert_eq!(role_of(&members, alice_id), GroupRole::Owner);
    assert_eq!(role_of(&members, bob_id), GroupRole::Member);
    let threads = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(threads.items[0].name.as_deref(), Some("hikers"));
    assert_eq!(threads.items[0].members, Some(3));

    // A send names no members; every other member is pushed.
    alice
        .send_text(group, "g-1", "hello hikers")
        .await
        .expect("send");
    for member in [&mut bob, &mut carol] {
        let m = message_push(member, "hello hikers").await;
        assert_eq!(m.thread_id, group);
    }

    // Dave already has a newer thread, and has synced his list past it.
    let newer = dave.open_private_thread(bob_id).await.expect("thread");
    assert!(newer > group);
    let listed = dave.sync_threads(0, 100).await.expect("threads");
    assert_eq!(listed.items.len(), 1);
    let cursor = listed.next_cursor;

    // Dave is added: pushed the thread, then reached by the next message.
    alice
        .command(Request::AddMembers {
            thread_id: group,
            members: vec![imlog_protocol::MemberId(dave_id)],
        })
        .await
        .expect("add");
    push_matching(
        &mut dave,
        |p| matches!(p, Push::Thread { thread_id, .. } if *thread_id == group),
    )
    .await;
    // Joining an older group still comes after his cursor.
    let later = dave.sync_threads(cursor, 100).await.expect("threads");
    let ids: Vec<ThreadId> = later.items.iter().map(|t| t.thread_id).collect();
    assert_eq!(ids, vec![group], "a group joined later is after the cursor");
    bob.send_text(group, "g-2", "welcome dave")
        .await
        .expect("send");
    message_push(&mut dave, "welcome dave").await;

    // Carol is removed: no longer pushed, no longer allowed to read.
    alice
        .command(Request::RemoveMember {
            thread_id: group,
            user_id: carol_id,
        })
        .await
        .expect("remove");
    bob.send_text(group, "g-3", "carol is gone")
        .await
        .expect("send");
    message_push(&mut dave, "carol is gone").await;
    no_message_push(&mut carol, "carol is gone").await;
    let err = carol
        .sync_messages(group, MessageId::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));

    // Rename, mute (posting refused until unmuted), promote, transfer.
    alice
        .command(Request::RenameGroup {
            thread_id: group,
            name: imlog_protocol::GroupName::parse("hiking club").unwrap(),
        })
        .await
        .expect("rename");
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    alice
        .command(Request::MuteMember {
            thread_id: group,
            user_id: bob_id,
            until: Some(until),
        })
        .await
        .expect("mute");
    let err = bob
        .send_text(group, "g-4", "can I talk?")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    alice
        .command(Request::MuteMember {
            thread_id: group,
            user_id: bob_id,
            until: None,
        })
        .await
        .expect("unmute");
    bob.send_text(group, "g-5", "thanks")
        .await
        .expect("unmuted");
    alice
        .command(Request::SetRole {
            thread_id: group,
            user_id: bob_id,
            role: GroupRole::Admin,
        })
        .await
        .expect("promote");
    // The owner cannot leave before handing the group on.
    let err = alice
        .command(Request::LeaveGroup { thread_id: group })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    alice
        .command(Request::TransferOwnership {
            thread_id: group,
            user_id: bob_id,
        })
        .await
        .expect("transfer");
    let members = bob.members(group).await.expect("members");
    assert_eq!(role_of(&members, bob_id), GroupRole::Owner);
    assert_eq!(role_of(&members, alice_id), GroupRole::Admin);
    alice
        .command(Request::LeaveGroup { thread_id: group })
        .await
        .expect("leave");

    let lines = system_lines(&mut bob, group, 9).await;
    assert_eq!(
        lines,
        vec![
            "alice created the group “hikers” with bob, carol".to_owned(),
            "alice added dave".into(),
            "alice removed carol".into(),
            "alice renamed the group to “hiking club”".into(),
            format!("alice muted bob until {}", until.to_rfc3339()),
            "alice unmuted bob".into(),
            "alice made bob an admin".into(),
            "alice made bob the owner".into(),
            "alice left".into(),
        ],
        "one line per change"
    );
    let threads = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(threads.items[0].name.as_deref(), Some("hiking club"));
    assert_eq!(threads.items[0].members, Some(2));
    app.stop().await;
}

async fn permissions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut owner, _, _) = app.user("owner").await;
    let (mut admin, admin_id, _) = app.user("admin").await;
    let (mut member, member_id, _) = app.user("member").await;
    let (other, other_id, _) = app.user("other").await;
    let (mut outsider, _, _) = app.user("outsider").await;
    let owner_id = UserId::new(1);
    let group = owner
        .create_group("rules", &[admin_id, member_id, other_id])
        .await
        .expect("create");
    owner
        .command(Request::SetRole {
            thread_id: group,
            user_id: admin_id,
            role: GroupRole::Admin,
        })
        .await
        .expect("promote");

    let code =
        |r: Result<(), imlog_client::ClientError>| r.err().and_then(|e| e.code()).unwrap_or("ok");
    let remove = |user| Request::RemoveMember {
        thread_id: group,
        user_id: user,
    };
    let set_role = |user, role| Request::SetRole {
        thread_id: group,
        user_id: user,
        role,
    };
    let mute = |user| Request::MuteMember {
        thread_id: group,
        user_id: user,
        until: Some(chrono::Utc::now() + chrono::Duration::minutes(5)),
    };
    let rename = || Request::RenameGroup {
        thread_id: group,
        name: imlog_protocol::GroupName::parse("renamed").unwrap(),
    };

    // Members: nothing but posting and leaving.
    assert_eq!(code(member.command(rename()).await), "forbidden");
    assert_eq!(code(member.command(remove(other_id)).await), "forbidden");
    assert_eq!(code(member.command(mute(other_id)).await), "forbidden");
    assert_eq!(
        code(member.command(set_role(other_id, GroupRole::Admin)).await),
        "forbidden"
    );
    // Admins: rename, mute and remove plain members; not admins or the
    // owner; no roles, no transfer.
    assert_eq!(code(admin.command(rename()).await), "ok");
    assert_eq!(code(admin.command(mute(member_id)).await), "ok");
    assert_eq!(code(admin.command(remove(owner_id)).await), "forbidden");
    assert_eq!(
        code(admin.command(set_role(member_id, GroupRole::Admin)).await),
        "forbidden"
    );
    assert_eq!(
        code(
            admin
                .command(Request::TransferOwnership {
                    thread_id: group,
                    user_id: admin_id,
                })
                .await
        ),
        "forbidden"
    );
    // Muted: posting refused with a stable code.
    let err = member.send_text(group, "m-1", "hello?").await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    // Roles are member or admin; ownership is transferred.
    assert_eq!(
        code(owner.command(set_role(member_id, GroupRole::Owner)).await),
        "bad_request"
    );
    assert_eq!(code(admin.command(remove(other_id)).await), "ok");
    assert_eq!(code(admin.command(remove(other_id)).await), "not_found");
    // Outsiders: nothing at all, and the group's existence does not show.
    assert_eq!(code(outsider.command(rename()).await), "forbidden");
    let err = outsider.members(group).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = outsider.send_text(group, "o-1", "hi").await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = outsider.members(ThreadId::new(999_999)).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    // Group ops on a private thread are refused.
    let (mut x, _, _) = app.user("xavier").await;
    let private = x.open_private_thread(member_id).await.expect("thread");
    assert_eq!(code(x.command(remove(member_id)).await), "forbidden");
    let err = x
        .command(Request::RenameGroup {
            thread_id: private,
            name: imlog_protocol::GroupName::parse("nope").unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_request"));
    // Unknown users cannot be added.
    let err = owner
        .command(Request::AddMembers {
            thread_id: group,
            members: vec![imlog_protocol::MemberId(UserId::new(999_999))],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    let _ = other;
    app.stop().await;
}

/// 10,000 members (registered straight on the log: argon2 for 10,000
/// logins would take minutes), built in two requests; a message reaches
/// the members who are online, and the 10,001st member is refused.
async fn ten_thousand(backend: Backend) {
    use imlog_events::{Envelope, EventMeta, UserRegistered};
    use imlog_log::AppendRecord;
    let app = TestApp::spawn(backend).await;
    let (mut owner, _, _) = app.user("owner").await;
    let (mut online, online_id, _) = app.user("online").await;
    let log = app.app.log();
    let records: Vec<AppendRecord> = (0..9_999)
        .map(|i| {
            let e = Envelope::new(
                EventMeta::new(None, uuid::Uuid::now_v7()),
                UserRegistered {
                    name: format!("member{i}"),
                    password_hash: "not-a-login".into(),
                },
            );
            AppendRecord {
                topic: e.event.topic(),
                key: e.event.key(),
                payload: e.encode(),
            }
        })
        .collect();
    let mut ids = Vec::new();
    for result in log.append_all(records).await {
        ids.push(UserId::from_position(result.expect("append")));
    }
    let mut ids: Vec<UserId> = ids.into_iter().filter(|&id| id != online_id).collect();
    ids.truncate(9_998);
    ids.push(online_id);
    // Wait for the users projection to have them all.
    let last = *ids.iter().max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while owner.friend_apply(last, "", "").await.is_err() {
        assert!(Instant::now() < deadline, "users not projected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (first, second) = ids.split_at(5_000);
    let started = Instant::now();
    let group = owner.create_group("everyone", first).await.expect("create");
    owner
        .command(Request::AddMembers {
            thread_id: group,
            members: second
                .iter()
                .copied()
                .map(imlog_protocol::MemberId)
                .collect(),
        })
        .await
        .expect("add the rest");
    eprintln!("10,000-member group built in {:?}", started.elapsed());
    let threads = online.sync_threads(0, 100).await.expect("threads");
    let listed = threads
        .items
        .iter()
        .find(|t| t.thread_id == group)
        .expect("listed");
    assert_eq!(listed.members, Some(10_000));

    let started = Instant::now();
    owner
        .send_text(group, "big-1", "hello, everyone")
        .await
        .expect("send");
    let sent = started.elapsed();
    message_push(&mut online, "hello, everyone").await;
    eprintln!("send acked in {sent:?}, pushed in {:?}", started.elapsed());
    online
        .send_text(group, "big-2", "hi boss")
        .await
        .expect("a member posts");

    let (_, extra_id, _) = app.user("onetoomany").await;
    let err = owner
        .command(Request::AddMembers {
            thread_id: group,
            members: vec![imlog_protocol::MemberId(extra_id)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_request"), "{err}");
    app.stop().await;
}
