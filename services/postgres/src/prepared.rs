//! Queries through statements prepared once per connection and kept (by SQL
//! text and parameter types), so Postgres parses and plans a hot statement
//! once per connection rather than once per call — which was half of its
//! CPU under a chat load.
//!
//! A kept statement still follows `replay --swap`: Postgres re-plans a
//! prepared statement when the schemas its `search_path` names resolve to
//! other schemas (the swap renames them), so the next execution reads the
//! swapped-in tables (`tests/tests/operations.rs` prepares one on a
//! one-connection pool, swaps, and reads again). The swapped-in tables must
//! have the same columns and types, as a rebuild by the same build's
//! migrations does: a statement whose result type changed fails with
//! "cached plan must not change result type" until its connection is gone.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

/// A parameter and its type, as `query_typed` takes them.
pub type TypedParam<'a> = (&'a (dyn ToSql + Sync), Type);

#[async_trait]
pub trait Prepared: GenericClient {
    async fn query_prepared(
        &self,
        sql: &str,
        params: &[TypedParam<'_>],
    ) -> Result<Vec<Row>, Error> {
        let (statement, values) = prepare(self, sql, params).await?;
        self.query(&statement, &values).await
    }

    async fn query_prepared_opt(
        &self,
        sql: &str,
        params: &[TypedParam<'_>],
    ) -> Result<Option<Row>, Error> {
        let (statement, values) = prepare(self, sql, params).await?;
        self.query_opt(&statement, &values).await
    }

    async fn query_prepared_one(&self, sql: &str, params: &[TypedParam<'_>]) -> Result<Row, Error> {
        let (statement, values) = prepare(self, sql, params).await?;
        self.query_one(&statement, &values).await
    }

    async fn execute_prepared(&self, sql: &str, params: &[TypedParam<'_>]) -> Result<u64, Error> {
        let (statement, values) = prepare(self, sql, params).await?;
        self.execute(&statement, &values).await
    }
}

impl<C: GenericClient + ?Sized> Prepared for C {}

async fn prepare<'p, C: GenericClient + ?Sized>(
    client: &C,
    sql: &str,
    params: &'p [TypedParam<'_>],
) -> Result<(tokio_postgres::Statement, Vec<&'p (dyn ToSql + Sync)>), Error> {
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let statement = client.prepare_typed_cached(sql, &types).await?;
    Ok((statement, params.iter().map(|(v, _)| *v).collect()))
}
