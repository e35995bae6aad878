//! `imlog log copy`: moves the whole log from one backend to another,
//! record by record into the same partition, checking that every record
//! lands at the same offset (so ids derived from positions do not change).
//! Restartable: it continues from the target's current end.

use anyhow::{bail, Context};
use imlog_events::Topic;
use imlog_log::{ReadFrom, SharedLog};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct CopyReport {
    pub copied: u64,
    pub already_there: u64,
}

pub async fn copy(source: &SharedLog, target: &SharedLog) -> anyhow::Result<CopyReport> {
    target
        .ensure_topics()
        .await
        .context("creating topics on the target")?;
    let mut report = CopyReport::default();
    for topic in Topic::ALL {
        let source_ends = source.end_offsets(topic).await?;
        let target_ends = target.end_offsets(topic).await?;
        for (partition, (&end, &start)) in source_ends.iter().zip(&target_ends).enumerate() {
            let partition = partition as i32;
            if start > end {
                bail!("{topic}/{partition}: the target has {start} records, the source only {end}: not a copy of it");
            }
            report.already_there += start as u64;
            if start == end {
                continue;
            }
            let mut reader = source
                .reader(vec![ReadFrom {
                    topic,
                    partition,
                    offset: start,
                }])
                .await?;
            let mut next = start;
            while next < end {
                let batch = reader.next_batch(1000, Duration::from_secs(10)).await?;
                if batch.is_empty() {
                    bail!("{topic}/{partition}: the source stopped at offset {next} before its end {end}");
                }
                for record in batch.into_iter().take_while(|r| r.offset < end) {
                    if record.offset != next {
                        bail!("{topic}/{partition}: the source has a gap at offset {next}");
                    }
                    let pos = target
                        .append_to(topic, partition, &record.key, record.payload)
                        .await
                        .with_context(|| {
                            format!("appending {topic}/{partition}@{next} to the target")
                        })?;
                    if pos.offset != next {
                        bail!(
                            "{topic}/{partition}: record {next} landed at offset {} on the target; \
                             was something else writing to it?",
                            pos.offset
                        );
                    }
                    next += 1;
                    report.copied += 1;
                }
            }
            tracing::info!(%topic, partition, records = end - start, "partition copied");
        }
    }
    Ok(report)
}
