//! What clients may hold before they have proven who they are: open connections (in total and per
//! address) and body bytes buffered before their request signature is checked (in total and per
//! address). Each holding is a guard that gives its share back when dropped, so nothing leaks on
//! an error path or a dropped connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A count in total and per address, each with its cap.
#[derive(Debug)]
struct Shares {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    max_total: usize,
    max_per_address: usize,
}

/// Which cap refused a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Total,
    Address,
}

impl Over {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Total => "limit_total",
            Over::Address => "limit_address",
        }
    }
}

impl Shares {
    fn take(&mut self, ip: IpAddr, n: usize) -> Result<(), Over> {
        let mine = self.per_address.get(&ip).copied().unwrap_or(0);
        if mine + n > self.max_per_address {
            return Err(Over::Address);
        }
        if self.total + n > self.max_total {
            return Err(Over::Total);
        }
        self.total += n;
        self.per_address.insert(ip, mine + n);
        Ok(())
    }

    fn give(&mut self, ip: IpAddr, n: usize) {
        self.total -= n;
        if let Some(mine) = self.per_address.get_mut(&ip) {
            *mine -= n;
            if *mine == 0 {
                self.per_address.remove(&ip);
            }
        }
    }
}

/// Capped shares of one resource, in total and per client address.
#[derive(Debug, Clone)]
pub struct Capped(Arc<Mutex<Shares>>);

impl Capped {
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Capped(Arc::new(Mutex::new(Shares {
            total: 0,
            per_address: HashMap::new(),
            max_total,
            max_per_address,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shares> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty holding for `ip`, grown with [`Held::grow`].
    pub fn holding(&self, ip: IpAddr) -> Held {
        Held {
            shares: self.clone(),
            ip,
            n: 0,
        }
    }

    /// A holding of `n` for `ip`, if both caps allow it.
    pub fn take(&self, ip: IpAddr, n: usize) -> Result<Held, Over> {
        let mut held = self.holding(ip);
        held.grow(n)?;
        Ok(held)
    }

    /// What is held in total now.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.lock().total
    }
}

/// A share held for one address; given back on drop.
#[derive(Debug)]
pub struct Held {
    shares: Capped,
    ip: IpAddr,
    n: usize,
}

impl Held {
    /// Hold `n` more, if both caps allow it.
    pub fn grow(&mut self, n: usize) -> Result<(), Over> {
        self.shares.lock().take(self.ip, n)?;
        self.n += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.n > 0 {
            self.shares.lock().give(self.ip, self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_address_and_drops_give_back() {
        let c = Capped::new(5, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = c.take(a, 2).unwrap();
        let mut a2 = c.take(a, 1).unwrap();
        assert_eq!(c.take(a, 1).unwrap_err(), Over::Address);
        let b1 = c.take(b, 2).unwrap();
        assert_eq!(c.take(b, 1).unwrap_err(), Over::Total, "5 of 5 held");
        drop(a1);
        assert_eq!(c.total(), 3);
        a2.grow(1).unwrap();
        assert_eq!(a2.grow(2).unwrap_err(), Over::Address);
        drop((a2, b1));
        assert_eq!(c.total(), 0);
        assert!(
            c.lock().per_address.is_empty(),
            "no address is remembered once it holds nothing"
        );
    }
}
