//! Versioned migrations, applied at start inside one transaction under an
//! advisory lock, so several processes starting at once apply each step once.
//!
//! Hand-rolled rather than a migration crate because the read model must be
//! creatable in any schema (replay builds into a fresh one); the whole runner
//! is the function below.

use crate::PgError;
use tokio_postgres::Client;

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub fn validate_schema_name(schema: &str) -> Result<(), PgError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PgError::SchemaName(schema.to_owned()))
    }
}

/// Creates `schema` if needed and applies the migrations it has not seen, in
/// version order. Migrations use unqualified names; they land in `schema`.
pub async fn migrate(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<(), PgError> {
    validate_schema_name(schema)?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('imlog.migrate.' || $1::text))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    for m in pending {
        tracing::info!(
            schema,
            version = m.version,
            name = m.name,
            "applying migration"
        );
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_schema_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema_name("imlog").is_ok());
        assert!(validate_schema_name("imlog_rebuild_17").is_ok());
        assert!(validate_schema_name("").is_err());
        assert!(validate_schema_name("a;drop").is_err());
        assert!(validate_schema_name("Upper").is_err());
        assert!(validate_schema_name("1abc").is_err());
    }
}
