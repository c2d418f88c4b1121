// Runs one Elasticsearch 8 node in this JVM, from the server jar and its netty4 HTTP transport on Maven Central (the
// distribution's module directories are not published there). It builds the node the way the test framework's
// MockNode does, with the plugins taken from the classpath, but without MockNode's ESTestCase, which refuses to run
// as root. It lives in Node's package for Node's package-private constructor, so it is compiled onto the classpath
// (javac), not run as a single-file program (that would load it in another class loader, another runtime package).
//   java -cp <classes>:<classpath> org.elasticsearch.node.Es8Main <home> <http port> <transport port>
package org.elasticsearch.node;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.transport.netty4.Netty4Plugin;

public class Es8Main extends Node {
    Es8Main(Environment environment) {
        super(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader loader) {
                return new MockPluginsService(env.settings(), env, List.of(Netty4Plugin.class));
            }
        }, false));
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "esproxy-real")
            .put("node.name", "es8")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.port", args[2])
            .put("discovery.type", "single-node")
            // a test machine's disk may be fuller than the default watermarks allow: allocate anyway
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();
        LogConfigurator.configureWithoutConfig(settings);
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Map.of(), home.resolve("config"), () -> "es8");
        Node node = new Es8Main(environment);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));
        node.start();
        System.out.println("Es8Main: node started");
        Thread.currentThread().join();
    }
}
