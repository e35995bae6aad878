//! The read model handle: the pool of the schema the queries read. Each
//! feature folder adds its queries as methods on [`ReadModel`], so callers
//! hold one handle and never a raw connection.
//!
//! Paging is by cursor (`id > cursor`), never OFFSET: projections apply each
//! partition in order, so a page is a prefix of the log and a cursor never
//! skips anything. Parameters are typed (`query_typed`), so each query is
//! one round trip without a prepared statement; a cached one would pin the
//! tables of a schema that `replay --swap` may rename away.

use imlog_postgres::Pool;

/// Reading failed: the database is unreachable or refused the query.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read model query failed: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no read model connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

#[derive(Clone)]
pub struct ReadModel {
    pool: Pool,
}

impl ReadModel {
    pub fn new(pool: Pool) -> ReadModel {
        ReadModel { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, ReadError> {
        Ok(self.pool.get().await?)
    }
}

/// Up to `limit` rows of a cursor page, fetched as `limit + 1` so that the
/// extra row says whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub load_more: bool,
    pub next_cursor: i64,
}

impl<T> Page<T> {
    pub(crate) fn from_overfetch(
        mut items: Vec<T>,
        limit: usize,
        cursor: i64,
        id: impl Fn(&T) -> i64,
    ) -> Page<T> {
        let load_more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = items.last().map(&id).unwrap_or(cursor);
        Page {
            items,
            load_more,
            next_cursor,
        }
    }
}

/// The limit as a SQL parameter: one more than the page, see [`Page`].
pub(crate) fn overfetch(limit: usize) -> i64 {
    limit as i64 + 1
}

#[cfg(test)]
mod tests {
    use super::Page;

    #[test]
    fn page_reports_more_only_past_the_limit() {
        let p = Page::from_overfetch(vec![1, 2, 3], 2, 0, |x| *x);
        assert_eq!(p.items, vec![1, 2]);
        assert!(p.load_more);
        assert_eq!(p.next_cursor, 2);
        let p = Page::from_overfetch(vec![1, 2], 2, 0, |x| *x);
        assert!(!p.load_more);
        let p = Page::from_overfetch(Vec::<i64>::new(), 2, 7, |x| *x);
        assert_eq!(p.next_cursor, 7);
    }
}
