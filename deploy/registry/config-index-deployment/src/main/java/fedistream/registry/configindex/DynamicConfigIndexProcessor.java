package fedistream.registry.configindex;

import java.util.ArrayList;
import java.util.List;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.Dynamic;
import io.apicurio.common.apps.config.DynamicConfigPropertyDef;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.BeanDiscoveryFinishedBuildItem;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.arc.processor.InjectionPointInfo;
import io.quarkus.deployment.annotations.BuildProducer;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;
import org.eclipse.microprofile.config.inject.ConfigProperty;
import org.jboss.jandex.AnnotationInstance;
import org.jboss.jandex.AnnotationValue;
import org.jboss.jandex.DotName;

/**
 * The build step the registry needs from the missing deployment module: every
 * field injected as {@code @ConfigProperty @Dynamic Supplier<T>} becomes a
 * {@link DynamicConfigPropertyDef} (name, type, default, label, description,
 * requirements), and the list of them is the runtime bean
 * {@link DynamicConfigPropertyList} that the registry's configuration API reads.
 */
class DynamicConfigIndexProcessor {

    private static final DotName CONFIG_PROPERTY = DotName.createSimple(ConfigProperty.class.getName());
    private static final DotName DYNAMIC = DotName.createSimple(Dynamic.class.getName());

    @BuildStep
    @Record(ExecutionTime.RUNTIME_INIT)
    void dynamicProperties(DynamicPropertiesInfoRecorder recorder, BeanDiscoveryFinishedBuildItem discovery,
            BuildProducer<SyntheticBeanBuildItem> beans) {
        List<DynamicConfigPropertyDef> defs = new ArrayList<>();
        for (InjectionPointInfo point : discovery.getInjectionPoints()) {
            AnnotationInstance property = point.getRequiredQualifier(CONFIG_PROPERTY);
            if (property == null || !point.isField() || point.getTarget().asField().annotation(DYNAMIC) == null) {
                continue;
            }
            defs.add(definition(point, property));
        }
        beans.produce(SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                .runtimeValue(recorder.initializePropertiesInfo(defs))
                .unremovable()
                .setRuntimeInit()
                .done());
    }

    private static DynamicConfigPropertyDef definition(InjectionPointInfo point, AnnotationInstance property) {
        String name = property.value("name").asString();
        AnnotationValue defaultValue = property.value("defaultValue");
        if (defaultValue == null) {
            throw new IllegalStateException("dynamic configuration property " + name + " has no default value");
        }
        org.jboss.jandex.Type declared = point.getRequiredType();
        if (declared.kind() != org.jboss.jandex.Type.Kind.PARAMETERIZED_TYPE) {
            throw new IllegalStateException("dynamic configuration property " + name + " must be a Supplier<T>, not " + declared);
        }
        String typeName = declared.asParameterizedType().arguments().get(0).name().toString();
        Class<?> type;
        try {
            type = Class.forName(typeName);
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException("dynamic configuration property " + name + ": unknown type " + typeName, e);
        }
        DynamicConfigPropertyDef def = new DynamicConfigPropertyDef(name, type, defaultValue.asString());
        AnnotationInstance dynamic = point.getTarget().asField().annotation(DYNAMIC);
        AnnotationValue label = dynamic.value("label");
        AnnotationValue description = dynamic.value("description");
        AnnotationValue requires = dynamic.value("requires");
        if (label != null) {
            def.setLabel(label.asString());
        }
        if (description != null) {
            def.setDescription(description.asString());
        }
        if (requires != null) {
            def.setRequires(requires.asStringArray());
        }
        return def;
    }
}
