//! Small-object size classes: 16-byte steps up to 128 bytes, then four classes per doubling up
//! to [`SMALL_MAX`]. Every power of two from 16 up is a class, and a block of a power-of-two
//! class is aligned to its size, so alignments above 16 are served by rounding up to one.

use core::alloc::Layout;

/// Largest block the node pools serve; bigger requests are mapped directly.
pub(crate) const SMALL_MAX: usize = 32 * 1024;
/// Number of size classes.
pub(crate) const CLASS_COUNT: usize = 40;

/// Block size of each class.
pub(crate) const CLASS_SIZE: [usize; CLASS_COUNT] = {
    let mut sizes = [0usize; CLASS_COUNT];
    let mut i = 0;
    while i < 8 {
        sizes[i] = 16 * (i + 1);
        i += 1;
    }
    let mut base = 128;
    while i < CLASS_COUNT {
        let step = base / 4;
        let mut k = 1;
        while k <= 4 {
            sizes[i] = base + step * k;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    sizes
};

/// Class index for sizes up to 1024, indexed by `(size + 15) / 16`.
const SMALL_LOOKUP: [u8; 65] = {
    let mut table = [0u8; 65];
    let mut slot = 0;
    while slot < 65 {
        let size = if slot == 0 { 1 } else { slot * 16 };
        let mut class = 0;
        while CLASS_SIZE[class] < size {
            class += 1;
        }
        table[slot] = class as u8;
        slot += 1;
    }
    table
};

/// The class serving `layout`, or `None` when it goes to the large (mmap) path. Zero-sized
/// layouts map to class 0; callers handle them before.
#[inline(always)]
pub(crate) fn class_of(layout: Layout) -> Option<usize> {
    let mut size = layout.size();
    if layout.align() > 16 {
        size = size.max(layout.align()).next_power_of_two();
    }
    if size <= 1024 {
        Some(SMALL_LOOKUP[size.div_ceil(16)] as usize)
    } else if size <= SMALL_MAX {
        Some(class_above_1k(size))
    } else {
        None
    }
}

/// The class of a layout of 1..=1024 bytes aligned to at most 16 (the fast paths' case).
#[inline(always)]
pub(crate) fn small_class_fast(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() <= 16 && size.wrapping_sub(1) < 1024 {
        Some(SMALL_LOOKUP[size.div_ceil(16)] as usize)
    } else {
        None
    }
}

#[inline]
fn class_above_1k(size: usize) -> usize {
    // size in (2^k, 2^(k+1)] with k >= 10; four classes per doubling.
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let step_shift = k - 2;
    let within = (size - 1 - (1 << k)) >> step_shift; // 0..=3
    // Class of 2^7 = 128 is index 7; each doubling above adds four.
    7 + 4 * (k - 7) + within + 1
}

/// How many free blocks of each class a thread cache holds before it hands half of them back
/// to the pool: about 64 KiB worth, 16..=512 blocks (a table: no division on the free path).
pub(crate) const CACHE_LIMIT: [u32; CLASS_COUNT] = {
    let mut limits = [0u32; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        let mut n = 64 * 1024 / CLASS_SIZE[i];
        if n < 16 {
            n = 16;
        }
        if n > 512 {
            n = 512;
        }
        limits[i] = n as u32;
        i += 1;
    }
    limits
};

/// [`CACHE_LIMIT`] of `class`.
#[inline(always)]
pub(crate) fn cache_limit(class: usize) -> usize {
    CACHE_LIMIT[class] as usize
}

/// How many fresh blocks a refill carves at once.
#[inline]
pub(crate) fn carve_batch(class: usize) -> usize {
    (cache_limit(class) / 4).max(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_fitting_class() {
        for size in 1..=SMALL_MAX {
            let class = class_of(Layout::from_size_align(size, 1).unwrap()).unwrap();
            assert!(CLASS_SIZE[class] >= size, "size {size}");
            assert!(class == 0 || CLASS_SIZE[class - 1] < size, "size {size}");
        }
        assert_eq!(class_of(Layout::from_size_align(SMALL_MAX + 1, 8).unwrap()), None);
    }

    #[test]
    fn classes_ascend_and_hold_every_power_of_two() {
        assert!(CLASS_SIZE.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CLASS_SIZE[CLASS_COUNT - 1], SMALL_MAX);
        let mut p = 16;
        while p <= SMALL_MAX {
            assert!(CLASS_SIZE.contains(&p));
            p *= 2;
        }
        assert!(CLASS_SIZE.iter().all(|s| s % 16 == 0));
    }

    #[test]
    fn alignment_rounds_to_a_power_of_two_class() {
        let class = class_of(Layout::from_size_align(24, 64).unwrap()).unwrap();
        assert_eq!(CLASS_SIZE[class], 64);
        let class = class_of(Layout::from_size_align(5000, 4096).unwrap()).unwrap();
        assert_eq!(CLASS_SIZE[class], 8192);
        assert_eq!(class_of(Layout::from_size_align(8, 65536).unwrap()), None);
    }
}
