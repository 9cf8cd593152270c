//! Key choice: a small fast PRNG, uniform and Zipf samplers.

use std::str::FromStr;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Uniform,
    /// Key of rank r (0-based) drawn with probability ∝ 1 / (r + 1)^s.
    Zipf(f64),
}

impl FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Dist, String> {
        if s == "uniform" {
            return Ok(Dist::Uniform);
        }
        match s.strip_prefix("zipf:").map(str::parse::<f64>) {
            Some(Ok(e)) if e > 0.0 && e.is_finite() => Ok(Dist::Zipf(e)),
            _ => Err(format!(
                "'{s}': expected 'uniform' or 'zipf:<exponent>' (exponent > 0)"
            )),
        }
    }
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dist::Uniform => write!(f, "uniform"),
            Dist::Zipf(e) => write!(f, "zipf:{e}"),
        }
    }
}

/// wyrand: fast, good enough for choosing keys, and reproducible by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

/// Draws key indexes in `0..n`. Zipf uses Vose's alias method: O(1) per
/// draw whatever the number of keys (the table is shared by all nodes).
#[derive(Debug)]
pub struct Sampler {
    n: u32,
    /// (probability of keeping the column, alias), empty for uniform.
    alias: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(dist: Dist, n: u32) -> Sampler {
        let Dist::Zipf(s) = dist else {
            return Sampler {
                n,
                alias: Vec::new(),
            };
        };
        let weights: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias = vec![(1.0f32, 0u32); n as usize];
        let (mut small, mut large): (Vec<u32>, Vec<u32>) =
            (0..n).partition(|&i| prob[i as usize] < 1.0);
        while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
            small.pop();
            alias[l as usize] = (prob[l as usize] as f32, g);
            prob[g as usize] -= 1.0 - prob[l as usize];
            if prob[g as usize] < 1.0 {
                large.pop();
                small.push(g);
            }
        }
        // Leftovers (rounding) keep their own column.
        for i in small.into_iter().chain(large) {
            alias[i as usize] = (1.0, i);
        }
        Sampler { n, alias }
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        if self.alias.is_empty() {
            return rng.below(self.n);
        }
        let r = rng.next_u64();
        let i = (((r >> 32) * self.n as u64) >> 32) as usize;
        let u = (r & 0xFF_FFFF) as f32 / (1u32 << 24) as f32;
        let (p, a) = self.alias[i];
        if u < p {
            i as u32
        } else {
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_frequencies() {
        let n = 1000;
        let s = Sampler::new(Dist::Zipf(1.1), n);
        let mut rng = Rng::new(7);
        let mut hits = vec![0u32; n as usize];
        let draws = 2_000_000;
        for _ in 0..draws {
            hits[s.sample(&mut rng) as usize] += 1;
        }
        let h: f64 = (1..=n).map(|r| 1.0 / (r as f64).powf(1.1)).sum();
        for r in [0usize, 1, 9, 99] {
            let want = draws as f64 / ((r + 1) as f64).powf(1.1) / h;
            let got = hits[r] as f64;
            assert!(
                (got - want).abs() < want * 0.05 + 30.0,
                "rank {r}: {got} vs {want}"
            );
        }
        assert_eq!("zipf:1.1".parse::<Dist>().unwrap(), Dist::Zipf(1.1));
        assert!("zipf:".parse::<Dist>().is_err());
    }

    #[test]
    fn uniform_covers() {
        let s = Sampler::new(Dist::Uniform, 10);
        let mut rng = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[s.sample(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }
}
