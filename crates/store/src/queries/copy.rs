//! A database copy's reads and writes (see `crate::copy`), in SQL both backends speak; compiled
//! inside each backend module like `principals.rs`. `super::INSERT_KEEPING_IDS` is what an INSERT
//! needs to write a generated id as given, and `super::SYNC_IDENTITY` moves the generator past
//! the ids written.

use super::principals::stored_row;
use super::{Db, Handle};
use crate::StoreError;
use crate::columns::measurement_columns;
use crate::copy::{Table, Type, Value};
use crate::model::Row;
use sqlx::{QueryBuilder, Row as _};

type DbRow = <Db as sqlx::Database>::Row;

fn column_list(table: &Table) -> String {
    table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

fn key_list(table: &Table) -> String {
    table.columns[..table.key]
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_value<'a>(b: &mut sqlx::query_builder::Separated<'_, 'a, Db, &'static str>, v: &'a Value) {
    match v {
        Value::Text(x) => b.push_bind(x.as_deref()),
        Value::Int(x) => b.push_bind(*x),
        Value::Bool(x) => b.push_bind(*x),
        Value::Real(x) => b.push_bind(*x),
        Value::Blob(x) => b.push_bind(x.as_deref()),
    };
}

fn read_value(r: &DbRow, i: usize, t: Type) -> Result<Value, sqlx::Error> {
    Ok(match t {
        Type::Text => Value::Text(r.try_get(i)?),
        Type::Int => Value::Int(r.try_get(i)?),
        Type::Bool => Value::Bool(r.try_get(i)?),
        Type::Real => Value::Real(r.try_get(i)?),
        Type::Blob => Value::Blob(r.try_get(i)?),
    })
}

impl Handle {
    /// Rows of `table` (with its filter).
    pub(crate) async fn count_rows(&self, table: &str, filter: &str) -> Result<i64, StoreError> {
        // Names and filters come from `crate::copy::TABLES`, never from input.
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {filter}");
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    /// The highest key of `table` held here, in the copy's order.
    pub(crate) async fn last_key(&self, table: &Table) -> Result<Option<Vec<Value>>, StoreError> {
        let keys = key_list(table);
        let desc = keys
            .split(", ")
            .map(|k| format!("{k} DESC"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {keys} FROM {} WHERE {} ORDER BY {desc} LIMIT 1",
            table.name, table.filter
        );
        let Some(r) = sqlx::query(&sql).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let key = table.columns[..table.key]
            .iter()
            .enumerate()
            .map(|(i, (_, t))| read_value(&r, i, *t))
            .collect::<Result<_, _>>()?;
        Ok(Some(key))
    }

    /// Up to `limit` rows of `table` after the key `after`, in key order.
    pub(crate) async fn read_page(
        &self,
        table: &Table,
        after: Option<&[Value]>,
        limit: i64,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let mut b = QueryBuilder::<Db>::new(format!(
            "SELECT {} FROM {} WHERE {}",
            column_list(table),
            table.name,
            table.filter
        ));
        if let Some(after) = after {
            b.push(format!(" AND ({}) > (", key_list(table)));
            let mut list = b.separated(", ");
            for v in after {
                push_value(&mut list, v);
            }
            b.push(")");
        }
        b.push(format!(" ORDER BY {} LIMIT ", key_list(table)));
        b.push_bind(limit);
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, t))| read_value(r, i, *t).map_err(StoreError::from))
                    .collect()
            })
            .collect()
    }

    /// Insert `rows` of `table` as they are; rows already here are left alone.
    pub(crate) async fn write_page(&self, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let keep_ids = if table.identity.is_some() {
            super::INSERT_KEEPING_IDS
        } else {
            ""
        };
        let mut b = QueryBuilder::<Db>::new(format!(
            "INSERT INTO {} ({}){keep_ids} ",
            table.name,
            column_list(table)
        ));
        b.push_values(rows, |mut list, row| {
            for v in row {
                push_value(&mut list, v);
            }
        });
        b.push(" ON CONFLICT DO NOTHING");
        b.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Move the table's id generator past the ids written.
    pub(crate) async fn sync_identity(&self, table: &Table) -> Result<(), StoreError> {
        if let (Some(column), Some(template)) = (table.identity, super::SYNC_IDENTITY) {
            let sql = template.replace("{table}", table.name).replace("{column}", column);
            sqlx::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// The highest (device_id, seq) of positions held here.
    pub(crate) async fn last_position_key(&self) -> Result<Option<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT device_id, seq FROM positions ORDER BY device_id DESC, seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` positions after `after`, in (device_id, seq) order, as the write path takes them.
    pub(crate) async fn positions_page(
        &self,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<Row>, StoreError> {
        let sql = format!(
            "SELECT device_id, seq, ts, {}, ext, record, kid, received_ms FROM positions \
             WHERE (device_id, seq) > ($1, $2) ORDER BY device_id, seq LIMIT $3",
            measurement_columns("", "")
        );
        let (dev, seq) = after.map_or(("", i64::MIN), |(d, s)| (d.as_str(), *s));
        let rows = sqlx::query(&sql)
            .bind(dev)
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_row).collect()
    }
}
