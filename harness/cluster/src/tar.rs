//! Tar archives for Docker: an image's build context, a file copied into
//! a container.

/// A minimal ustar writer: regular files and directories are all the build
/// context needs.
pub(crate) struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    pub(crate) fn new() -> Self {
        Self { buf: Vec::new() }
    }

    pub(crate) fn entry(&mut self, path: &str, data: &[u8], mode: u32, dir: bool) {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            let split = path[..path.len().min(155)]
                .rfind('/')
                .expect("tar paths over 100 bytes need a directory");
            (&path[..split], &path[split + 1..])
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let s = format!("{:0width$o}\0", value, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], if dir { 0 } else { data.len() as u64 });
        octal(&mut h[136..148], 0);
        h[156] = if dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&h);
        if !dir {
            self.buf.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.buf.extend(std::iter::repeat_n(0u8, pad));
        }
    }

    pub(crate) fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        // Parent directories first, so any extractor is happy.
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i + 1];
            if !self.has_dir(dir) {
                self.entry(dir, &[], 0o755, true);
            }
            at += i + 1;
        }
        self.entry(path, data, mode, false);
    }

    fn has_dir(&self, dir: &str) -> bool {
        self.buf.chunks(512).any(|c| {
            c.len() == 512 && c[156] == b'5' && c.starts_with(dir.as_bytes()) && c[dir.len()] == 0
        })
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_have_valid_checksums_and_parent_dirs() {
        let mut t = Tar::new();
        t.file("rootfs/lib/x86_64-linux-gnu/libc.so.6", b"abc", 0o755);
        let buf = t.finish();
        let headers: Vec<&[u8]> = buf.chunks(512).collect();
        // rootfs/, rootfs/lib/, rootfs/lib/x86_64-linux-gnu/, the file, its
        // data block, two zero blocks.
        assert_eq!(headers.len(), 7);
        for h in &headers[..4] {
            let stored =
                u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap().trim(), 8).unwrap();
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
        }
        assert_eq!(headers[0][156], b'5');
        assert!(headers[3].starts_with(b"rootfs/lib/x86_64-linux-gnu/libc.so.6\0"));
        assert_eq!(&headers[4][..3], b"abc");
    }
}
