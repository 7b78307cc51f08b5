//! Reading a `.csv.gz` landing file that may be corrupt, without losing what precedes the
//! break.
//!
//! flate2's decoder returns an error, and drops the bytes it had decompressed in that same
//! call, when it meets corrupt data; with the CSV reader's 1 MiB reads, every line of the
//! last megabyte before a break would be lost. [`SalvagingGzReader`] reads at full speed,
//! and only when the stream breaks decompresses the file again, a byte at a time from
//! where it had got to, so that it hands over every byte before the break, then the error.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use flate2::read::MultiGzDecoder;

/// A gzip (multi-member) reader of a file that yields every decompressible byte before a
/// break, then the error.
pub struct SalvagingGzReader {
    /// The same open file, to decompress again from its start after a break (never
    /// reopened by path, which a link could have replaced since).
    again: io::Result<File>,
    inner: MultiGzDecoder<BufReader<File>>,
    /// Bytes handed over so far.
    delivered: u64,
    /// After a break: the bytes decompressed before it not yet handed over, then the error.
    salvaged: Option<(Vec<u8>, usize, Option<io::Error>)>,
}

impl SalvagingGzReader {
    pub fn new(file: File) -> Self {
        SalvagingGzReader {
            again: file.try_clone(),
            inner: MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)),
            delivered: 0,
            salvaged: None,
        }
    }

    /// Decompresses the file again, skips the `delivered` bytes, and collects the bytes
    /// after them one at a time until the stream breaks.
    fn salvage(&self, error: io::Error) -> (Vec<u8>, usize, Option<io::Error>) {
        let rest = (|| -> io::Result<Vec<u8>> {
            let mut file = match &self.again {
                Ok(f) => f.try_clone()?,
                Err(e) => return Err(io::Error::new(e.kind(), e.to_string())),
            };
            // The decoder that broke shares this offset, and is not read again.
            file.seek(SeekFrom::Start(0))?;
            let mut again = MultiGzDecoder::new(BufReader::new(file));
            io::copy(&mut (&mut again).take(self.delivered), &mut io::sink())?;
            let mut rest = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = again.read(&mut byte) {
                rest.push(byte[0]);
            }
            Ok(rest)
        })()
        .unwrap_or_default();
        (rest, 0, Some(error))
    }
}

impl Read for SalvagingGzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((bytes, at, error)) = &mut self.salvaged {
            if *at < bytes.len() {
                let n = buf.len().min(bytes.len() - *at);
                buf[..n].copy_from_slice(&bytes[*at..*at + n]);
                *at += n;
                return Ok(n);
            }
            return Err(error.take().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "corrupt gzip stream")
            }));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.delivered += n as u64;
                Ok(n)
            }
            Err(error) => {
                self.salvaged = Some(self.salvage(error));
                self.read(buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_before_the_break_is_handed_over_then_the_error() {
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        let mut broken = bytes[..bytes.len() / 2].to_vec();
        broken.extend_from_slice(b"not gzip at all");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv.gz");
        std::fs::write(&path, &broken).unwrap();

        // What a byte-at-a-time decoder gets before the break.
        let mut most = Vec::new();
        let mut d = MultiGzDecoder::new(broken.as_slice());
        let mut byte = [0u8; 1];
        while let Ok(1) = d.read(&mut byte) {
            most.push(byte[0]);
        }
        assert!(
            most.len() > 1000 && most.len() < text.len(),
            "{}",
            most.len()
        );

        let mut r = SalvagingGzReader::new(File::open(&path).unwrap());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        // Ends with the decoder's error, not at a clean end.
        loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("no error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert_eq!(got, most);
        // The bytes after the cut may decode into a little garbage before the error.
        let same = got
            .iter()
            .zip(text.as_bytes())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            same > 1000 && same + 256 > got.len(),
            "{same} of {}",
            got.len()
        );
    }
}
