// Reads every entry of a zip with java.util.zip.ZipFile and checks each entry's CRC-32 and
// size against the central directory. Exit 1 on any mismatch. Run: java ZipCheck.java FILE
import java.io.InputStream;
import java.util.Enumeration;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

public class ZipCheck {
    public static void main(String[] args) throws Exception {
        long entries = 0;
        try (ZipFile zip = new ZipFile(args[0])) {
            byte[] buf = new byte[1 << 20];
            for (Enumeration<? extends ZipEntry> e = zip.entries(); e.hasMoreElements(); ) {
                ZipEntry entry = e.nextElement();
                CRC32 crc = new CRC32();
                long size = 0;
                try (InputStream in = zip.getInputStream(entry)) {
                    int n;
                    while ((n = in.read(buf)) > 0) { crc.update(buf, 0, n); size += n; }
                }
                if (crc.getValue() != entry.getCrc() || size != entry.getSize()) {
                    System.err.println("bad entry " + entry.getName());
                    System.exit(1);
                }
                entries++;
            }
        }
        System.out.println(entries + " entries ok");
    }
}
