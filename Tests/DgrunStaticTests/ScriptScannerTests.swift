import Testing
@testable import DgrunStatic

@Suite struct ScriptScannerTests {
    @Test func shellCommands() {
        let script = """
            #!/bin/sh
            set -eu   # not a command to look up
            LANG=C sort data.txt | uniq -c > out.txt
            if [ -f x ]; then gzip -9 x; fi
            for f in *.csv; do awk -F, '{print $1}' "$f"; done
            result=$(jq .name file.json) && curl -s https://example.test/api
            cd /tmp; ./local-tool --flag
            # make all
            """
        #expect(ScriptScanner.commands(inShellScript: script) == ["sort", "uniq", "gzip", "awk", "jq", "curl", "./local-tool"])
    }

    @Test func literals() {
        let text = """
            data = open("/etc/hostname").read()
            URL = "https://data.example.test/v1/items?x=1"
            DB = "db.internal.test:5432"
            local = 'localhost:8080'
            missing = "/nonexistent/dgrun/path"
            ratio = "3:2"
            """
        let found = ScriptScanner.literals(in: text)
        #expect(found.paths == ["/etc/hostname"])
        #expect(found.urls == ["https://data.example.test/v1/items?x=1"])
        #expect(found.endpoints == ["db.internal.test:5432", "localhost:8080"])
    }
}
